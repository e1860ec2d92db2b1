// A static server for the browser tests and the browser benchmark: the built app under /app/
// (a sub-path, as on GitHub Pages) and model bundles under /bundles/<name>/, with HTTP Range,
// a count of every request, faults on demand (a connection cut mid-file, a corrupted file) and
// the cross-origin isolation headers (off on demand).
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.wasm': 'application/wasm', '.css': 'text/css', '.json': 'application/json',
  '.png': 'image/png', '.jpg': 'image/jpeg', '.wav': 'audio/wav',
};

/** Starts the server on 127.0.0.1 (port 0 = any free one). `roots` maps a URL prefix to a folder. */
export function serve(roots, port = 0) {
  const state = {
    requests: [],           // { path, range, status }
    cutAfter: new Map(),    // file name -> bytes to send before dropping the connection (once)
    corrupt: new Set(),     // file names served with a flipped byte
    stallAfter: new Map(),  // file name -> bytes to send before the response hangs (once)
    stalled: [],
    // Cross-origin isolation (COOP + COEP), which lets the app's CPU path use a second worker.
    isolated: true,
  };
  const server = http.createServer((req, res) => {
    if (req.method === 'OPTIONS') return res.writeHead(204).end();
    const url = new URL(req.url, 'http://x');
    const pathname = decodeURIComponent(url.pathname);
    const record = { path: pathname, range: req.headers.range ?? null, status: 0 };
    state.requests.push(record);
    const reply = (status, body = '', headers = {}) => {
      record.status = status;
      res.writeHead(status, headers);
      res.end(body);
    };
    const prefix = Object.keys(roots).find((p) => pathname.startsWith(p));
    if (!prefix) return reply(404, 'not found');
    const root = path.resolve(roots[prefix]) + path.sep;
    let file = path.join(root, pathname.slice(prefix.length));
    if (!file.startsWith(root)) return reply(403, 'outside the root');
    if (fs.existsSync(file) && fs.statSync(file).isDirectory()) file = path.join(file, 'index.html');
    if (!fs.existsSync(file)) return reply(404, 'not found');
    let body = fs.readFileSync(file);
    const name = path.basename(file);
    if (state.corrupt.has(name)) {
      body = Buffer.from(body);
      body[Math.floor(body.length / 2)] ^= 0xff;
    }
    const type = TYPES[path.extname(file)] ?? 'application/octet-stream';
    const headers = { 'Content-Type': type, 'Accept-Ranges': 'bytes', 'Cache-Control': 'no-cache' };
    if (state.isolated) {
      headers['Cross-Origin-Opener-Policy'] = 'same-origin';
      headers['Cross-Origin-Embedder-Policy'] = 'require-corp';
    }
    let start = 0;
    let end = body.length - 1;
    let status = 200;
    const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
    if (range) {
      start = Number(range[1]);
      if (range[2]) end = Math.min(end, Number(range[2]));
      if (start > end) return reply(416, '', { 'Content-Range': `bytes */${body.length}` });
      status = 206;
      headers['Content-Range'] = `bytes ${start}-${end}/${body.length}`;
    }
    headers['Content-Length'] = String(end - start + 1);
    record.status = status;
    const cut = state.cutAfter.get(name);
    if (cut !== undefined && cut < end - start + 1) {
      state.cutAfter.delete(name);
      res.writeHead(status, headers);
      res.write(body.subarray(start, start + cut), () => setTimeout(() => res.destroy(), 50));
      record.cut = true;
      return;
    }
    const stall = state.stallAfter.get(name);
    if (stall !== undefined && stall < end - start + 1) {
      state.stallAfter.delete(name);
      res.writeHead(status, headers);
      res.write(body.subarray(start, start + stall));
      state.stalled.push(res);
      record.stalled = true;
      return;
    }
    res.writeHead(status, headers);
    res.end(req.method === 'HEAD' ? undefined : body.subarray(start, end + 1));
  });
  return new Promise((resolve) => {
    server.listen(port, '127.0.0.1', () => {
      const origin = `http://127.0.0.1:${server.address().port}`;
      resolve({
        origin,
        state,
        requestsTo: (prefix) => state.requests.filter((r) => r.path.startsWith(prefix)),
        close: () => new Promise((r) => {
          state.stalled.forEach((res) => res.destroy());
          server.closeAllConnections();
          server.close(r);
        }),
      });
    });
  });
}

// `node server.mjs DIST BUNDLES [PORT]`: the app at /, bundle folders at /bundles/.
if (import.meta.url === `file://${process.argv[1]}`) {
  const [dist, bundles, port] = process.argv.slice(2);
  const s = await serve({ '/bundles/': path.resolve(bundles) + '/', '/': path.resolve(dist) + '/' }, Number(port ?? 8080));
  console.log(`Jñāna: ${s.origin}/`);
  console.log(`with the tiny offline bundle: ${s.origin}/?manifest=./bundles/tiny/manifest.json`);
}
