// Staff page: search a case, select transfers, associate them with a treatment plan, and
// watch the plan until its bundle appears. Text from the server is only ever set through
// textContent, never parsed as HTML.
"use strict";

const API = "../api/v1";
const POLL_MS = 1000;
let pollTimer = null;
let csrf = null;  // the session's CSRF token, sent with every request that changes state

const $ = (id) => document.getElementById(id);

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

function say(text, kind) {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "";
}

async function call(path, options) {
  const response = await fetch(API + path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {  // signed out meanwhile (expired, disabled)
    window.location.assign(`/auth/login?next=${encodeURIComponent("/staff/")}`);
  }
  if (!response.ok) {
    throw new Error(body.message || `${response.status} ${response.statusText}`);
  }
  return body;
}

function statusCell(row, status) {
  cell(row, status, `status status-${status}`);
}

function selectable(transfer) {
  return !transfer.treatment_plan_uuid && !["unmatched", "invalid"].includes(transfer.status);
}

function showTransfers(transfers) {
  const body = $("transfers").tBodies[0];
  body.replaceChildren();
  for (const transfer of transfers) {
    const row = body.insertRow();
    row.dataset.id = transfer.id;
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = transfer.id;
    box.disabled = !selectable(transfer);
    box.setAttribute("aria-label", `select ${transfer.file_name}`);
    row.insertCell().append(box);
    cell(row, transfer.file_name);
    cell(row, transfer.step);
    cell(row, transfer.is_uploaded ? "yes" : "no");
    cell(row, transfer.validation_reason ? `${transfer.validation}: ${transfer.validation_reason}` : transfer.validation);
    statusCell(row, transfer.status);
    cell(row, transfer.treatment_plan_uuid);
  }
  $("transfers").hidden = transfers.length === 0;
  $("no-transfers").hidden = transfers.length !== 0;
}

async function search(event) {
  if (event) event.preventDefault();
  const caseNumber = $("case-number").value.trim();
  if (!caseNumber) return;
  try {
    const body = await call(`/asset-transfers?case_number=${encodeURIComponent(caseNumber)}`);
    showTransfers(body.transfers);
  } catch (error) {
    say(`Search failed: ${error.message}`, "error");
  }
}

function showAssets(assets) {
  const list = $("assets");
  list.replaceChildren();
  for (const asset of assets) {
    const item = document.createElement("li");
    item.dataset.status = asset.status;
    if (asset.status === "done") {
      const link = document.createElement("a");
      link.href = asset.url;
      link.textContent = asset.filename;
      link.className = "bundle-link";
      item.append(link, ` (v${asset.version}, ${asset.file_count} files, ${asset.size} bytes, sha256 `);
      const sum = document.createElement("code");
      sum.textContent = asset.sha256;
      item.append(sum, ")");
    } else {
      item.textContent = `${asset.filename}: ${asset.status}${asset.error ? ` (${asset.error})` : ""}`;
      item.className = `status-${asset.status}`;
    }
    list.append(item);
  }
  $("no-assets").hidden = assets.length !== 0;
}

function showPlan(plan) {
  $("plan").hidden = false;
  $("plan-title").textContent = plan.treatment_plan_uuid;
  $("plan-status").textContent = plan.status;
  $("plan-status").className = `status status-${plan.status}`;
  const body = $("plan-transfers").tBodies[0];
  body.replaceChildren();
  for (const transfer of plan.transfers) {
    const row = body.insertRow();
    cell(row, transfer.file_name);
    cell(row, transfer.is_uploaded ? "yes" : "no");
    cell(row, transfer.validation);
    statusCell(row, transfer.status);
    cell(row, transfer.associated_by);
  }
  showAssets(plan.assets);
}

async function watchPlan(planUuid) {
  clearTimeout(pollTimer);
  try {
    const plan = await call(`/treatment-plans/${encodeURIComponent(planUuid)}`);
    showPlan(plan);
    await search();  // the case's rows follow the plan's progress
    if (plan.status !== "bundled") {
      pollTimer = setTimeout(() => watchPlan(planUuid), POLL_MS);
    }
  } catch (error) {
    say(`Cannot show the plan: ${error.message}`, "error");
  }
}

async function associate(event) {
  event.preventDefault();
  const ids = [...document.querySelectorAll("#transfers tbody input:checked")].map((box) => Number(box.value));
  const planUuid = $("plan-uuid").value.trim().toLowerCase();
  if (ids.length === 0) {
    say("Select at least one file first.", "error");
    return;
  }
  try {
    const plan = await call(`/treatment-plans/${encodeURIComponent(planUuid)}/asset-transfers`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ transfer_ids: ids }),
    });
    say(`Associated ${ids.length} file(s) with ${planUuid}.`, "ok");
    showPlan(plan);
    watchPlan(planUuid);
  } catch (error) {
    say(`Association refused: ${error.message}`, "error");
  }
}

async function loadUnmatched() {
  try {
    const body = await call("/asset-transfers?status=unmatched&limit=100");
    const rows = $("unmatched").tBodies[0];
    rows.replaceChildren();
    for (const transfer of body.transfers) {
      const row = rows.insertRow();
      cell(row, transfer.file_name);
      cell(row, transfer.unmatched_reason);
      cell(row, transfer.created_at);
    }
  } catch (error) {
    say(`Cannot list unmatched files: ${error.message}`, "error");
  }
}

$("search-form").addEventListener("submit", search);
$("associate-form").addEventListener("submit", associate);
$("show-plan").addEventListener("click", () => {
  const planUuid = $("plan-uuid").value.trim().toLowerCase();
  if (planUuid) watchPlan(planUuid);
});
async function loadSession() {
  const response = await fetch("/auth/session", { credentials: "same-origin" });
  if (!response.ok) {
    $("signed-in").hidden = true;  // AUTH_REQUIRED off, or an API key: no session
    return;
  }
  const session = await response.json();
  csrf = session.csrf;
  $("user-name").textContent = session.user + (session.org_id ? ` (${session.org_id})` : "");
  $("logout-csrf").value = csrf;
}

loadSession().then(loadUnmatched);
