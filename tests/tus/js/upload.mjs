// Uploads one file to a tus endpoint with tus-js-client (Node) and prints, as JSON, the
// upload URL and the request id the gateway answered with.
//   node upload.mjs ENDPOINT FILE MODE IDENTITY [FILETYPE]
// MODE: "parallel" (parallelUploads: 3, i.e. concatenation), "creation"
// (uploadDataDuringCreation: true) or "plain".
import { readFileSync } from 'node:fs'
import { basename } from 'node:path'
import * as tus from 'tus-js-client'

const [endpoint, file, mode, identity, filetype] = process.argv.slice(2)
const data = readFileSync(file)
let requestId = null

const options = {
  endpoint,
  headers: { 'x-rh-identity': identity },
  metadata: {
    filetype: filetype || 'application/vnd.redhat.testareno.tusjs+tgz',
    filename: basename(file),
  },
  chunkSize: 4 * 1024 * 1024,
  retryDelays: [0, 200, 500, 1000],
  onAfterResponse (req, res) {
    const id = res.getHeader('x-rh-insights-request-id')
    if (id && req.getMethod() === 'POST' && !req.getHeader('Upload-Concat')?.startsWith('partial')) {
      requestId = id
    }
  },
}
if (mode === 'parallel') {
  options.parallelUploads = 3
  delete options.chunkSize
}
if (mode === 'creation') {
  options.uploadDataDuringCreation = true
}

const upload = new tus.Upload(data, {
  ...options,
  onError (error) {
    console.error(`upload failed: ${error}`)
    process.exit(1)
  },
  onSuccess () {
    console.log(JSON.stringify({ url: upload.url, requestId }))
  },
})
upload.start()
