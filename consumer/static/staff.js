// Staff page: search a case, select transfers, associate them with a treatment plan, and
// watch the plan until its bundle appears. Text from the server is only ever set through
// textContent, never parsed as HTML.
//
// State lives in the URL (?case=…&plan=…), so a reload or a shared link shows the same
// case and plan. While a case or a plan is shown the page refreshes itself every POLL_MS
// (keeping the boxes ticked). An error is cleared by the next success of what failed (a
// user action clears any message); a refresh's own error by the next refresh that works.
"use strict";

const API = "../api/v1";
const POLL_MS = 3000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const UUID_EXAMPLE = "123e4567-e89b-12d3-a456-426614174000";
const TIME = new Intl.DateTimeFormat(undefined, {
  year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
let pollTimer = null;
let csrf = null;  // the session's CSRF token, sent with every request that changes state
let shownCase = "";
let shownPlan = "";
let transfersById = new Map();  // the case's rows as last shown, to name them in messages

const $ = (id) => document.getElementById(id);

function cell(row, text, className) {
  const td = row.insertCell();
  td.textContent = text === null || text === undefined ? "" : String(text);
  if (className) td.className = className;
  return td;
}

// A timestamp in the browser's time zone, to the second; the ISO form in the title.
function timeElement(iso) {
  const element = document.createElement("time");
  if (!iso) return element;
  element.dateTime = iso;
  element.title = iso;
  const date = new Date(iso);
  element.textContent = Number.isNaN(date.getTime()) ? iso : TIME.format(date);
  return element;
}

function timeCell(row, iso) {
  const td = row.insertCell();
  td.append(timeElement(iso));
  return td;
}

// kind "error" or "ok"; source: what the message is about ("user" for an action, "poll"
// for a refresh), so that a refresh does not wipe an action's error before it is read.
function say(text, kind, source = "user") {
  const box = $("message");
  box.textContent = text;
  box.className = kind || "";
  box.dataset.source = source;
}

function succeeded(source) {
  const box = $("message");
  if (box.className === "error" && (source === "user" || box.dataset.source === source)) say("", "");
}

async function call(path, options) {
  const response = await fetch(API + path, { credentials: "same-origin", ...options });
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {  // signed out meanwhile (expired, disabled)
    const here = window.location.pathname + window.location.search;
    window.location.assign(`/auth/login?next=${encodeURIComponent(here)}`);
  }
  if (!response.ok) {
    const error = new Error(body.message || `${response.status} ${response.statusText}`);
    error.status = response.status;
    throw error;
  }
  return body;
}

function statusCell(row, status) {
  cell(row, status, `status status-${status}`);
}

// Why a row cannot be associated ("" when it can).
function whyNot(transfer) {
  if (transfer.status === "unmatched") return `its name does not follow the naming pattern (${transfer.unmatched_reason})`;
  if (transfer.status === "invalid") {
    return `it failed validation${transfer.validation_reason ? `: ${transfer.validation_reason}` : ""}`;
  }
  if (transfer.treatment_plan_uuid) return `already associated with treatment plan ${transfer.treatment_plan_uuid}`;
  if (transfer.type && transfer.type !== "obj") return "not an OBJ file; only OBJ files are bundled";
  return "";
}

function shortSha(transfer) {
  return (transfer.sha1 || "").slice(0, 8);
}

// The rows of one file name, oldest first: a re-exported file appears once per export.
function exportsOf(transfer) {
  return [...transfersById.values()].filter((other) => other.file_name === transfer.file_name)
    .sort((x, y) => (x.created_at || "").localeCompare(y.created_at || "") || x.id - y.id);
}

// A file's name, and for a re-exported one which export (received time, short sha1).
function fileLabel(transfer) {
  const exports = exportsOf(transfer);
  if (exports.length < 2) return transfer.file_name;
  const when = transfer.created_at ? TIME.format(new Date(transfer.created_at)) : "?";
  return `${transfer.file_name} (export ${exports.indexOf(transfer) + 1} of ${exports.length}, `
    + `received ${when}, sha1 ${shortSha(transfer)})`;
}

// The API names transfers by id ("asset transfer 11 (name)"): staff know them by name.
function nameTransfers(message) {
  return message.replace(/asset transfers? (\d+)(?: \([^)]*\))?/g, (text, id) => {
    const transfer = transfersById.get(Number(id));
    return transfer ? fileLabel(transfer) : text;
  });
}

function selectedIds() {
  return [...document.querySelectorAll("#transfers tbody input:checked:enabled")].map((box) => Number(box.value));
}

function updateSelectAll() {
  const boxes = [...document.querySelectorAll("#transfers tbody input:enabled")];
  const ticked = boxes.filter((box) => box.checked).length;
  const all = $("select-all");
  all.disabled = boxes.length === 0;
  all.checked = boxes.length > 0 && ticked === boxes.length;
  all.indeterminate = ticked > 0 && ticked < boxes.length;
}

function showTransfers(transfers) {
  const ticked = new Set(selectedIds());
  transfersById = new Map(transfers.map((transfer) => [transfer.id, transfer]));
  const body = $("transfers").tBodies[0];
  body.replaceChildren();
  for (const transfer of transfers) {
    const row = body.insertRow();
    row.dataset.id = transfer.id;
    const why = whyNot(transfer);
    const box = document.createElement("input");
    box.type = "checkbox";
    box.value = transfer.id;
    box.disabled = Boolean(why);
    box.checked = !why && ticked.has(transfer.id);
    box.setAttribute("aria-label", `select ${transfer.file_name}`);
    const first = row.insertCell();
    first.append(box);
    if (why) {
      row.title = box.title = `Cannot be associated: ${why}`;
      row.classList.add("not-selectable");
      const hint = document.createElement("span");
      hint.className = "why";
      hint.textContent = transfer.treatment_plan_uuid && transfer.status !== "invalid" ? "in a plan"
        : transfer.status === "invalid" ? "failed validation" : transfer.status === "unmatched" ? "bad name" : "not OBJ";
      first.append(hint);
    }
    const name = cell(row, transfer.file_name, "file");
    const version = document.createElement("span");
    version.className = "version";
    const exports = exportsOf(transfer);
    version.textContent = (exports.length > 1 ? `export ${exports.indexOf(transfer) + 1} of ${exports.length} · ` : "")
      + `sha1 ${shortSha(transfer)}`;
    version.title = `sha1 ${transfer.sha1 || ""}`;
    name.append(version);
    timeCell(row, transfer.created_at);
    cell(row, transfer.step);
    cell(row, transfer.is_uploaded ? "yes" : "no");
    cell(row, transfer.validation_reason ? `${transfer.validation}: ${transfer.validation_reason}` : transfer.validation);
    statusCell(row, transfer.status);
    cell(row, transfer.treatment_plan_uuid);
  }
  $("transfers").hidden = transfers.length === 0;
  $("no-transfers").hidden = transfers.length !== 0;
  updateSelectAll();
}

function keepInUrl() {
  const params = new URLSearchParams();
  if (shownCase) params.set("case", shownCase);
  if (shownPlan) params.set("plan", shownPlan);
  const query = params.toString();
  window.history.replaceState(null, "", window.location.pathname + (query ? `?${query}` : ""));
}

async function loadCase(source) {
  if (!shownCase) return;
  try {
    const body = await call(`/asset-transfers?case_number=${encodeURIComponent(shownCase)}`);
    showTransfers(body.transfers);
    succeeded(source);
  } catch (error) {
    say(`Search failed: ${error.message}`, "error", source);
  }
}

async function search(event) {
  if (event) event.preventDefault();
  const caseNumber = $("case-number").value.trim();
  if (!caseNumber) {
    say("Enter a case number first.", "error");
    return;
  }
  if (caseNumber !== shownCase) transfersById = new Map();
  shownCase = caseNumber;
  keepInUrl();
  await loadCase("user");
  schedule();
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
      item.append(link, ` (v${asset.version}, ${asset.file_count} files, ${asset.size} bytes, built `,
        timeElement(asset.completed_at || asset.created_at), ", sha256 ");
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
    const name = cell(row, transfer.file_name);
    const version = document.createElement("span");
    version.className = "version";
    version.textContent = `sha1 ${shortSha(transfer)}${transfer.bundle_version ? ` · in v${transfer.bundle_version}` : ""}`;
    name.append(version);
    cell(row, transfer.is_uploaded ? "yes" : "no");
    cell(row, transfer.validation);
    statusCell(row, transfer.status);
    cell(row, transfer.associated_by);
    timeCell(row, transfer.associated_at);
  }
  showAssets(plan.assets);
}

async function loadPlan(source) {
  if (!shownPlan) return;
  try {
    showPlan(await call(`/treatment-plans/${encodeURIComponent(shownPlan)}`));
    succeeded(source);
  } catch (error) {
    say(`Cannot show the plan: ${error.message}`, "error", source);
  }
}

// The plan uuid field, checked by the page itself (not the browser's generic bubble).
function planUuid() {
  const field = $("plan-uuid");
  const value = field.value.trim().toLowerCase();
  const problem = !value ? "Enter the treatment plan's uuid."
    : UUID.test(value) ? ""
    : `“${field.value.trim()}” is not a treatment plan uuid: expected 32 hexadecimal digits `
      + `in groups of 8-4-4-4-12, for example ${UUID_EXAMPLE}.`;
  $("plan-uuid-error").textContent = problem;
  $("plan-uuid-error").hidden = !problem;
  field.setAttribute("aria-invalid", problem ? "true" : "false");
  return problem ? null : value;
}

async function watchPlan(uuid) {
  shownPlan = uuid;
  keepInUrl();
  await loadPlan("user");
  schedule();
}

async function associate(event) {
  event.preventDefault();
  const uuid = planUuid();
  if (!uuid) return;
  const ids = selectedIds();
  if (ids.length === 0) {
    say("Select at least one file first.", "error");
    return;
  }
  try {
    const plan = await call(`/treatment-plans/${encodeURIComponent(uuid)}/asset-transfers`, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify({ transfer_ids: ids }),
    });
    say(`Associated ${ids.length} file(s) with ${uuid}.`, "ok");
    shownPlan = uuid;
    keepInUrl();
    showPlan(plan);
    await loadCase("user");
    schedule();
  } catch (error) {
    const text = `Association refused: ${nameTransfers(error.message)}`;
    if (error.status === 409) {  // the table was stale (someone else was faster): show what is
      await loadCase("user");
      say(`${text}. The table has been refreshed.`, "error");
    } else {
      say(text, "error");
    }
  }
}

async function loadUnmatched(source) {
  try {
    const body = await call("/asset-transfers?status=unmatched&limit=100");
    const rows = $("unmatched").tBodies[0];
    rows.replaceChildren();
    for (const transfer of body.transfers) {
      const row = rows.insertRow();
      cell(row, transfer.file_name);
      cell(row, transfer.unmatched_reason);
      timeCell(row, transfer.created_at);
    }
    succeeded(source);
  } catch (error) {
    say(`Cannot list unmatched files: ${error.message}`, "error", source);
  }
}

async function refresh() {
  await Promise.all([loadCase("poll"), loadPlan("poll"), loadUnmatched("poll")]);
  $("refreshed").hidden = false;
  $("refreshed-at").replaceWith(Object.assign(timeElement(new Date().toISOString()), { id: "refreshed-at" }));
}

// One refresh every POLL_MS while a case or a plan is shown (the case, the plan, unmatched files).
function schedule() {
  clearTimeout(pollTimer);
  if (!shownCase && !shownPlan) return;
  pollTimer = setTimeout(async () => {
    await refresh();
    schedule();
  }, POLL_MS);
}

$("search-form").addEventListener("submit", search);
$("associate-form").addEventListener("submit", associate);
$("plan-uuid").addEventListener("input", () => {
  if ($("plan-uuid").getAttribute("aria-invalid") === "true") planUuid();
});
$("show-plan").addEventListener("click", () => {
  const uuid = planUuid();
  if (uuid) watchPlan(uuid);
});
$("select-all").addEventListener("change", () => {
  for (const box of document.querySelectorAll("#transfers tbody input:enabled")) box.checked = $("select-all").checked;
  updateSelectAll();
});
$("transfers").tBodies[0].addEventListener("change", updateSelectAll);

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

async function start() {
  await loadSession();
  const params = new URLSearchParams(window.location.search);
  shownCase = (params.get("case") || "").trim();
  const plan = (params.get("plan") || "").trim().toLowerCase();
  shownPlan = UUID.test(plan) ? plan : "";
  $("case-number").value = shownCase;
  if (shownPlan) $("plan-uuid").value = shownPlan;
  await Promise.all([loadCase("user"), loadPlan("user"), loadUnmatched("poll")]);
  schedule();
}

start();
