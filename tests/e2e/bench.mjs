// The browser benchmark (a program, not a test): the built app in headless Chromium, on the wasm
// CPU path or (--compute webgpu) on the GPU engine through the browser's WebGPU, with a bundle
// served from 127.0.0.1. Prints download and load time, time to first token (text, and picture +
// text), decode tokens/s, the engine the page reports and the page's peak memory.
//
//   node tests/e2e/bench.mjs --dist dist --bundle bundles/phi2-shapes [--tokens 32] [--image PNG]
//                            [--compute cpu|webgpu] [--one-worker]
//
// The page is served cross-origin isolated, so the CPU path splits Phi-2 between two workers;
// --one-worker serves it without the isolation headers (one worker, as on a plain static host).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from './server.mjs';
import { launch, byTestId, waitReady, lastAnswer, rendererPeakBytes } from './browser.mjs';

const { values: args } = parseArgs({
  options: {
    dist: { type: 'string', default: 'dist' },
    bundle: { type: 'string' },
    tokens: { type: 'string', default: '32' },
    image: { type: 'string', default: 'tests/fixtures/clip_vision/image.png' },
    json: { type: 'boolean', default: false },
    compute: { type: 'string', default: 'cpu' },
    'one-worker': { type: 'boolean', default: false },
  },
});
if (!['cpu', 'webgpu'].includes(args.compute)) throw new Error('--compute is cpu or webgpu');
if (!args.bundle) throw new Error('--bundle DIR is required');
const bundle = path.resolve(args.bundle);
const bytes = JSON.parse(fs.readFileSync(path.join(bundle, 'manifest.json'), 'utf8')).files.reduce((n, f) => n + (f.size ?? 0), 0);
const server = await serve({ '/app/': path.resolve(args.dist), '/bundles/': path.dirname(bundle) });
server.state.isolated = !args['one-worker'];
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'jnana-bench-'));
const HOUR = 3_600_000;
const stats = (s) => {
  const m = /(\d+) tokens · first after (\d+) ms · ([\d.]+) tok\/s/.exec(s);
  if (!m) throw new Error(`no numbers in "${s}"`);
  return { tokens: Number(m[1]), firstMs: Number(m[2]), tokPerS: Number(m[3]) };
};
const result = { bundle: path.basename(bundle), bundleBytes: bytes };
let context;
try {
  // --enable-unsafe-webgpu gives headless Chromium its WebGPU adapter (SwiftShader here).
  ({ context } = await launch(profile, args.compute === 'webgpu' ? ['--enable-unsafe-webgpu'] : []));
  const page = context.pages()[0];
  page.setDefaultTimeout(HOUR);
  await page.goto(`${server.origin}/app/?compute=${args.compute}&manifest=${encodeURIComponent(`${server.origin}/bundles/${path.basename(bundle)}/manifest.json`)}`);
  let t = Date.now();
  await byTestId(page, 'download').click();
  await byTestId(page, 'loading').waitFor({ timeout: HOUR });
  result.downloadS = (Date.now() - t) / 1000;
  t = Date.now();
  await waitReady(page, HOUR);
  result.loadS = (Date.now() - t) / 1000;
  const badge = byTestId(page, 'backend');
  result.engine = `${(await badge.innerText()).trim()} (${await badge.getAttribute('title')})`;

  await page.getByRole('button', { name: 'Settings' }).click();
  await page.getByLabel('Max new tokens').fill(args.tokens);
  await page.getByLabel('Max new tokens').press('Tab');
  await page.getByRole('button', { name: 'Settings' }).click();

  await byTestId(page, 'question').fill('Describe the weather in one long sentence.');
  await byTestId(page, 'send').click();
  result.text = stats((await lastAnswer(page, HOUR)).stats);

  await byTestId(page, 'new-conversation').click();
  await byTestId(page, 'image-input').setInputFiles(path.resolve(args.image));
  await byTestId(page, 'question').fill('What is in this picture?');
  await byTestId(page, 'send').click();
  result.image = stats((await lastAnswer(page, HOUR)).stats);
  result.pagePeakBytes = rendererPeakBytes();
} finally {
  await context?.close();
  await server.close();
  fs.rmSync(profile, { recursive: true, force: true });
}
if (args.json) {
  console.log(JSON.stringify(result));
} else {
  const gb = (b) => `${(b / 1e9).toFixed(2)} GB`;
  console.log(`bundle ${result.bundle} (${gb(bytes)}), headless Chromium, asked to compute on: ${args.compute}`);
  console.log(`engine                       ${result.engine}`);
  console.log(`download into OPFS + sha256  ${result.downloadS.toFixed(1)} s (${(bytes / 1e6 / result.downloadS).toFixed(0)} MB/s from 127.0.0.1)`);
  console.log(`build models from storage    ${result.loadS.toFixed(1)} s`);
  console.log(`text question                first token ${result.text.firstMs} ms, decode ${result.text.tokPerS} tok/s (${result.text.tokens} tokens)`);
  console.log(`picture + question           first token ${result.image.firstMs} ms, decode ${result.image.tokPerS} tok/s`);
  console.log(`page peak memory (renderer)  ${gb(result.pagePeakBytes)} = ${(result.pagePeakBytes / bytes).toFixed(2)}× the bundle`);
}
