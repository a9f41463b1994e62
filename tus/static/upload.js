// The /upload/ page: Uppy's Dashboard with its tus plugin against this gateway's tus
// endpoint. The chosen service and category become each file's `filetype` metadata
// (application/vnd.redhat.<service>.<category>), which routes it like a multipart upload.
// Once a file is uploaded, its request id (a HEAD on its upload URL) and its state (the
// status API, polled until it is final) are shown in the table.
import { Dashboard, Tus, Uppy } from './vendor/uppy.min.mjs'

const FINAL = new Set(['available', 'rejected', 'expired', 'terminated'])
const config = await (await fetch('config.json')).json()
const service = document.getElementById('service')
const category = document.getElementById('category')
for (const name of config.services) {
  service.append(new Option(name, name))
}

function filetype () {
  return `application/vnd.redhat.${service.value}.${category.value || 'upload'}`
}

const uppy = new Uppy({ restrictions: { maxFileSize: config.maxSize }, meta: { filetype: filetype() } })
  .use(Dashboard, {
    inline: true,
    target: '#dashboard',
    height: 380,
    showProgressDetails: true,
    proudlyDisplayPoweredByUppy: false,
  })
  .use(Tus, {
    endpoint: config.endpoint,
    chunkSize: config.chunkSize,
    retryDelays: [0, 1000, 3000, 5000, 10000],
    removeFingerprintOnSuccess: true,
  })
window.uppy = uppy // for the browser test and the curious

function showFiletype () {
  document.getElementById('filetype').textContent = filetype()
  uppy.setMeta({ filetype: filetype() })
}
service.addEventListener('change', showFiletype)
category.addEventListener('input', showFiletype)
showFiletype()

function row (file) {
  const tr = document.createElement('tr')
  tr.dataset.file = file.id
  for (const text of [file.name, '…', 'uploaded']) {
    const td = document.createElement('td')
    td.textContent = text
    tr.append(td)
  }
  document.querySelector('#uploads tbody').append(tr)
  return tr
}

async function follow (file, uploadURL) {
  const tr = row(file)
  const [, idCell, stateCell] = tr.children
  const head = await fetch(uploadURL, { method: 'HEAD', headers: { 'Tus-Resumable': '1.0.0' } })
  const requestId = head.headers.get('x-rh-insights-request-id')
  idCell.textContent = requestId
  tr.dataset.requestId = requestId
  for (;;) {
    const answer = await fetch(`${config.statusPrefix}${encodeURIComponent(requestId)}`)
    const state = answer.ok ? (await answer.json()).status : `status ${answer.status}`
    stateCell.textContent = state
    stateCell.className = `state-${state}`
    if (FINAL.has(state) || !answer.ok) return
    await new Promise((resolve) => setTimeout(resolve, 1000))
  }
}

uppy.on('upload-success', (file, response) => {
  follow(file, response.uploadURL).catch((error) => {
    const tr = row(file)
    tr.children[2].textContent = `failed: ${error}`
    tr.children[2].className = 'state-failed'
  })
})
