// End to end, in headless Chromium: the built app (dist/) served from 127.0.0.1 under a sub-path,
// a tiny synthetic bundle made by the native CLI, and the native CLI's answers as the reference.
//
// Needs: JNANA_CLI (the native `jnana` binary), JNANA_DIST (trunk's output), JNANA_BUNDLE (a folder
// made by `jnana synth --preset tiny`), JNANA_BUNDLE_Q8 (the same with Q8_0 weights, beside it),
// JNANA_ARTIFACTS (screenshots go there), and an image and a WAV (JNANA_IMAGE, JNANA_WAV).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { serve } from './server.mjs';
import { launch, byTestId, waitReady, lastAnswer, rendererPeakBytes, browserWebgpu, gpuDiagnostics } from './browser.mjs';

const env = (name) => {
  const v = process.env[name];
  assert.ok(v, `${name} must be set`);
  return path.resolve(v);
};
const CLI = env('JNANA_CLI');
const DIST = env('JNANA_DIST');
const BUNDLE = env('JNANA_BUNDLE');
const BUNDLE_Q8 = env('JNANA_BUNDLE_Q8');
const ARTIFACTS = env('JNANA_ARTIFACTS');
const IMAGE = env('JNANA_IMAGE');
const WAV = env('JNANA_WAV');
const MAX_TOKENS = 40;

fs.mkdirSync(ARTIFACTS, { recursive: true });
const bundleName = path.basename(BUNDLE);
const manifestFiles = JSON.parse(fs.readFileSync(path.join(BUNDLE, 'manifest.json'), 'utf8')).files;
let server;
const profiles = [];

/** Runs the CLI and returns { ids, heard } parsed from its stderr/stdout. */
function cli(args) {
  const r = run(CLI, ['chat', '--bundle', BUNDLE, '--ids', '--max-tokens', String(MAX_TOKENS), ...args]);
  const idsLine = r.stderr.split('\n').find((l) => l.startsWith('ids:'));
  assert.ok(idsLine, `the CLI printed no ids: ${r.stderr}`);
  const ids = idsLine.slice(4).trim().split(/\s+/).filter(Boolean).map(Number);
  const heard = /^\(heard\) (.*)$/m.exec(r.stdout + r.stderr)?.[1] ?? null;
  return { ids, heard };
}
function run(cmd, args) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, `${cmd} ${args.join(' ')} failed: ${r.stderr}`);
  return r;
}

/** Sets "Max new tokens" through the settings panel, as a user would. */
async function setMaxTokens(page, n) {
  const settings = page.getByRole('button', { name: 'Settings' });
  await settings.click();
  const maxTokens = page.getByLabel('Max new tokens');
  await maxTokens.fill(String(n));
  await maxTokens.press('Tab');
  await settings.click();
}

function newProfile() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'jnana-chromium-'));
  profiles.push(dir);
  return dir;
}

const appUrl = () => `${server.origin}/app/?manifest=${encodeURIComponent(`${server.origin}/bundles/${bundleName}/manifest.json`)}`;
const weightRequests = () => server.requestsTo('/bundles/').filter((r) => !r.path.endsWith('/manifest.json'));

before(async () => {
  server = await serve({ '/app/': DIST, '/bundles/': path.dirname(BUNDLE) + '/' });
});

after(async () => {
  await server?.close();
  for (const p of profiles) fs.rmSync(p, { recursive: true, force: true });
});

const profile = newProfile();

test('first visit: the model panel shows the bundle, Download fetches it (resuming a dropped connection) and loads it', async () => {
  const { context, page } = await launch(profile);
  try {
    await page.goto(appUrl());
    await byTestId(page, 'download').waitFor();
    // Every file of the manifest is listed with its size before anything is downloaded.
    const rows = await page.locator('table.files tbody tr').allInnerTexts();
    assert.equal(rows.length, manifestFiles.length, rows.join('\n'));
    for (const f of manifestFiles) assert.ok(rows.some((r) => r.includes(f.name)), `${f.name} is listed`);
    assert.match(await page.locator('.total').innerText(), /Total download: \d/);
    assert.equal(weightRequests().length, 0, 'nothing but the manifest is fetched before Download');
    await page.screenshot({ path: path.join(ARTIFACTS, '1-empty.png'), fullPage: true });

    // The server drops the connection 3 MB into the language model.
    server.state.cutAfter.set('phi2.gguf', 3_000_000);
    await byTestId(page, 'download').click();
    await byTestId(page, 'download-progress').waitFor();
    await page.waitForFunction(() => Number(document.querySelector('[data-testid="download-progress"] progress')?.value) > 0);
    await page.screenshot({ path: path.join(ARTIFACTS, '2-downloading.png'), fullPage: true });
    // The user is told, and the download goes on.
    await page.locator('.notice', { hasText: 'connection dropped while fetching phi2.gguf' }).waitFor();
    await waitReady(page);

    const phi = server.requestsTo(`/bundles/${bundleName}/phi2.gguf`);
    assert.ok(phi.some((r) => r.cut), 'the connection was cut');
    const resumed = phi.find((r) => r.range && /^bytes=[1-9]\d*-$/.test(r.range));
    assert.ok(resumed, `a Range request resumed the file: ${JSON.stringify(phi)}`);
    assert.equal(resumed.status, 206);
    assert.match(await byTestId(page, 'backend').innerText(), /CPU/);
  } finally {
    await context.close();
  }
});

test('second visit: loads from storage with zero weight requests, then answers like the native CLI', async () => {
  server.state.requests.length = 0;
  const { context, page } = await launch(profile);
  try {
    await page.goto(appUrl());
    await waitReady(page);
    assert.deepEqual(weightRequests(), [], 'no weight file was requested');
    // Headless Chromium without --enable-unsafe-webgpu offers no adapter: automatic choice, CPU, and why.
    assert.match(await byTestId(page, 'backend').innerText(), /CPU/);
    assert.match(await byTestId(page, 'backend').getAttribute('title'), /WebGPU|GPU/);

    const newConversation = () => byTestId(page, 'new-conversation').click();
    // Fewer tokens per answer keep the comparison quick (the settings panel is part of the app).
    await setMaxTokens(page, MAX_TOKENS);

    // Text only (Enter sends).
    const question = 'What is shown in this picture?';
    await byTestId(page, 'question').fill(question);
    await byTestId(page, 'question').press('Enter');
    const text = await lastAnswer(page);
    assert.ok(text.ids.length > 0);
    assert.deepEqual(text.ids, cli(['--text', question]).ids, 'text only: same ids as native');
    assert.match(text.stats, /tok\/s/);
    console.log(`  tiny bundle, text question: ${text.stats}`);

    // Image only.
    await newConversation();
    await byTestId(page, 'image-input').setInputFiles(IMAGE);
    await byTestId(page, 'picture').waitFor();
    await byTestId(page, 'send').click();
    const image = await lastAnswer(page);
    assert.deepEqual(image.ids, cli(['--image', IMAGE]).ids, 'image only: same ids as native');
    await page.screenshot({ path: path.join(ARTIFACTS, '3-chat-with-image.png'), fullPage: true });

    // Audio only: the transcript appears (editable) before sending.
    await newConversation();
    await byTestId(page, 'audio-input').setInputFiles(WAV);
    const transcript = byTestId(page, 'transcript');
    await transcript.waitFor({ timeout: 60_000 });
    const heard = await transcript.inputValue();
    assert.match(heard, /colou?r .*bus/i, 'the real Whisper heard the spoken question');
    const nativeAudio = cli(['--audio', WAV]);
    assert.equal(heard.trim(), (nativeAudio.heard ?? '').trim(), 'the browser heard what the CLI heard');
    await byTestId(page, 'send').click();
    const audio = await lastAnswer(page);
    assert.deepEqual(audio.ids, nativeAudio.ids, 'audio only: same ids as native');

    // All three.
    await newConversation();
    await byTestId(page, 'image-input').setInputFiles(IMAGE);
    await byTestId(page, 'audio-input').setInputFiles(WAV);
    await transcript.waitFor({ timeout: 60_000 });
    await byTestId(page, 'question').fill(question);
    await byTestId(page, 'send').click();
    const all = await lastAnswer(page);
    assert.deepEqual(all.ids, cli(['--image', IMAGE, '--audio', WAV, '--text', question]).ids, 'image+audio+text: same ids as native');

    // Stop cancels mid-answer: a long answer is asked for, and stopped once it streams.
    await setMaxTokens(page, 1500);
    // A picture that is not one gets a clear message in place of an answer; the chat goes on.
    await newConversation();
    await byTestId(page, 'image-input').setInputFiles({ name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('not a picture at all') });
    await byTestId(page, 'send').click();
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid="answer"]')].pop()?.dataset.done === 'true');
    const broken = await byTestId(page, 'answer').last().locator('.text').innerText();
    assert.match(broken, /picture|image/i, broken);
    await byTestId(page, 'question').fill('Tell me a long story.');
    await byTestId(page, 'send').click();
    await page.waitForFunction(() => {
      const a = [...document.querySelectorAll('[data-testid="answer"]')].pop();
      return a && a.dataset.ids.trim().split(' ').length >= 3;
    });
    await byTestId(page, 'stop').click();
    assert.match((await lastAnswer(page)).stats, /stopped/);

    // A follow-up in the same conversation works.
    await byTestId(page, 'question').fill('And then?');
    await byTestId(page, 'question').press('Enter');
    const followUp = await lastAnswer(page);
    assert.ok(followUp.ids.length > 0 && !followUp.stats.includes('stopped'), followUp.stats);
    assert.equal(await byTestId(page, 'answer').count(), 3);
    // The microphone (Chromium's fake device): the meter moves while recording, and stopping
    // hands the recording (WebAudio-decoded PCM) to Whisper; its transcript box appears.
    await newConversation();
    await byTestId(page, 'record').click();
    const meter = page.getByLabel('Microphone level');
    await meter.waitFor();
    await page.waitForFunction(() => Number(document.querySelector('meter')?.value) > 0.01, null, { timeout: 10_000 });
    await page.waitForTimeout(1500);
    await byTestId(page, 'record').click();
    await transcript.waitFor({ timeout: 60_000 });
    assert.equal(await byTestId(page, 'error').count(), 0, 'no error');

    // Phone width, dark theme.
    await page.setViewportSize({ width: 390, height: 844 });
    await page.getByRole('button', { name: 'Dark mode' }).click();
    assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), 'dark');
    await page.screenshot({ path: path.join(ARTIFACTS, '4-phone-dark.png')  });
    console.log(`  page peak memory (renderer VmHWM): ${(rendererPeakBytes() / 1e6).toFixed(0)} MB`);
  } finally {
    await context.close();
  }
});

test('WebGPU: the same profile with WebGPU enabled answers on the GPU engine with the CPU path\'s ids; CPU can be forced', async (t) => {
  // --enable-unsafe-webgpu gives headless Chromium a SwiftShader adapter (no shader-f16) on most
  // machines; on one CI machine the same Chromium offered none at all.
  const webgpuFlags = ['--enable-unsafe-webgpu'];
  let { context, page } = await launch(profile, webgpuFlags);
  try {
    await page.goto(appUrl());
    let offered = await browserWebgpu(context, server.origin);
    if (!offered.adapter) {
      // Asked once more in a new browser, in case its GPU process failed to start.
      console.log(`  Chromium offered no WebGPU adapter (${JSON.stringify(offered)}); relaunching once: ${await gpuDiagnostics(context)}`);
      await context.close();
      ({ context, page } = await launch(profile, webgpuFlags));
      await page.goto(appUrl());
      offered = await browserWebgpu(context, server.origin);
    }
    await waitReady(page);
    if (!offered.adapter) {
      await checkWithoutAdapter(page, offered.api);
      t.skip(`the GPU engine was not run in the browser: this Chromium offers no WebGPU adapter (${await gpuDiagnostics(context)}); `
        + 'checked the app\'s no-adapter path instead (the GPU engine itself is tested natively, crates/jnana-gpu/tests)');
      return;
    }
    // Left to choose, the app keeps the CPU on a software renderer (slower than it), and says so.
    if (offered.adapter.fallback) {
      assert.match(await byTestId(page, 'backend').innerText(), /CPU/);
      assert.match(await byTestId(page, 'backend').getAttribute('title'), /software renderer, slower than the CPU path/);
    } else {
      assert.match(await byTestId(page, 'backend').innerText(), /WebGPU/);
    }
    await page.goto(`${appUrl()}&compute=webgpu`);
    await waitReady(page, 300_000);
    const backend = byTestId(page, 'backend');
    assert.match(await backend.innerText(), /WebGPU/, 'the badge names the engine');
    assert.match(await backend.getAttribute('title'), /GPU.*software renderer.*shader-f16/s, 'the note says why and how');
    await setMaxTokens(page, MAX_TOKENS);

    const question = 'What is shown in this picture?';
    await byTestId(page, 'question').fill(question);
    await byTestId(page, 'send').click();
    const text = await lastAnswer(page, 300_000);
    assert.deepEqual(text.ids, cli(['--text', question]).ids, 'WebGPU, text: same ids as the CPU path');
    console.log(`  WebGPU (SwiftShader), text question: ${text.stats}`);

    await byTestId(page, 'new-conversation').click();
    await byTestId(page, 'image-input').setInputFiles(IMAGE);
    await byTestId(page, 'picture').waitFor();
    await byTestId(page, 'question').fill(question);
    await byTestId(page, 'send').click();
    const picture = await lastAnswer(page, 300_000);
    assert.deepEqual(picture.ids, cli(['--image', IMAGE, '--text', question]).ids, 'WebGPU, picture + text: same ids as the CPU path');
    console.log(`  WebGPU (SwiftShader), picture + text: ${picture.stats}`);

    // Whisper on the GPU hears what the CPU hears.
    const started = Date.now();
    await byTestId(page, 'audio-input').setInputFiles(WAV);
    const transcript = byTestId(page, 'transcript');
    await transcript.waitFor({ timeout: 300_000 });
    assert.equal((await transcript.inputValue()).trim(), (cli(['--audio', WAV]).heard ?? '').trim(), 'WebGPU Whisper heard what the CLI heard');
    console.log(`  WebGPU (SwiftShader), Whisper tiny.en on the spoken question: ${((Date.now() - started) / 1000).toFixed(1)} s`);
    await page.getByRole('button', { name: 'Remove the spoken question' }).click();

    // Forcing the CPU moves the loaded model there at once.
    await page.getByRole('button', { name: 'Settings' }).click();
    await byTestId(page, 'compute').selectOption('cpu');
    await page.waitForFunction(() => /CPU/.test(document.querySelector('[data-testid="backend"]')?.textContent ?? ''), null, { timeout: 120_000 });
    await waitReady(page);
    assert.match(await backend.getAttribute('title'), /CPU chosen in the settings/);
    await byTestId(page, 'question').fill(question);
    await byTestId(page, 'send').click();
    assert.deepEqual((await lastAnswer(page)).ids, text.ids, 'the CPU answers as WebGPU did');
    assert.equal(await byTestId(page, 'error').count(), 0, 'no error');
  } finally {
    await context.close();
  }
});

/** A browser that offers no WebGPU adapter: whether left to choose or told to use WebGPU, the app
 * says so plainly and answers on the CPU, as the native CLI does. */
async function checkWithoutAdapter(page, api) {
  const noAdapter = api
    ? /WebGPU could not start: this browser offers no GPU adapter.*computing on the CPU/
    : /(No WebGPU in this browser|this browser has none): computing on the CPU/;
  const backend = byTestId(page, 'backend');
  assert.match(await backend.innerText(), /CPU/);
  assert.match(await backend.getAttribute('title'), noAdapter);
  await page.goto(`${appUrl()}&compute=webgpu`);
  await waitReady(page);
  assert.match(await backend.innerText(), /CPU/);
  assert.match(await backend.getAttribute('title'), noAdapter);
  await setMaxTokens(page, MAX_TOKENS);
  const question = 'What is shown in this picture?';
  await byTestId(page, 'question').fill(question);
  await byTestId(page, 'send').click();
  assert.deepEqual((await lastAnswer(page)).ids, cli(['--text', question]).ids, 'no adapter: the CPU answers as the CLI does');
  assert.equal(await byTestId(page, 'error').count(), 0, 'no error');
}

test('the CPU path splits the packed weights with a second worker on a cross-origin isolated page, and answers exactly as one worker', async () => {
  assert.equal(path.dirname(BUNDLE_Q8), path.dirname(BUNDLE), 'both bundles are served from one folder');
  const name = path.basename(BUNDLE_Q8);
  const url = `${server.origin}/app/?compute=cpu&manifest=${encodeURIComponent(`${server.origin}/bundles/${name}/manifest.json`)}`;
  const dir = newProfile();
  const answer = async (page) => {
    await setMaxTokens(page, MAX_TOKENS);
    await byTestId(page, 'question').fill('What is shown in this picture?');
    await byTestId(page, 'question').press('Enter');
    return lastAnswer(page);
  };
  const badge = (page) => byTestId(page, 'backend');
  let two;
  let one;
  {
    const { context, page } = await launch(dir);
    try {
      await page.goto(url);
      await byTestId(page, 'download').click();
      await waitReady(page);
      assert.match(await badge(page).innerText(), /2 workers/);
      // Q8_0's fc2 of every layer is tiled (64 rows of 256 values): its second half is the partner's.
      assert.match(await badge(page).getAttribute('title'), /[1-9]\d* of Phi-2's weights are split between two CPU workers/);
      two = await answer(page);
    } finally {
      await context.close();
    }
  }
  server.state.isolated = false;
  try {
    const { context, page } = await launch(dir);
    try {
      await page.goto(url);
      await waitReady(page);
      assert.doesNotMatch(await badge(page).innerText(), /2 workers/);
      assert.match(await badge(page).getAttribute('title'), /not cross-origin isolated/);
      one = await answer(page);
    } finally {
      await context.close();
    }
  } finally {
    server.state.isolated = true;
  }
  assert.ok(two.ids.length > 0);
  assert.deepEqual(two.ids, one.ids, 'two workers answer with one worker\'s ids');
});

test('a download interrupted by closing the page resumes where it stopped after a reload', async () => {
  const { context, page } = await launch(newProfile());
  try {
    server.state.requests.length = 0;
    // The speech model's response hangs after 5 MB, as on a stalled connection.
    server.state.stallAfter.set('whisper-model.safetensors', 5_000_000);
    await page.goto(appUrl());
    await byTestId(page, 'download').click();
    while (server.state.stalled.length === 0) await new Promise((r) => setTimeout(r, 100));
    await page.waitForTimeout(1000); // the worker stores what arrived
    await page.reload();
    // Storage holds an incomplete bundle: the panel offers to go on.
    await byTestId(page, 'download').click();
    await waitReady(page);
    const whisper = server.requestsTo(`/bundles/${bundleName}/whisper-model.safetensors`);
    assert.ok(whisper[0].stalled, JSON.stringify(whisper));
    const resumed = whisper.find((r) => r.range === 'bytes=5000000-');
    assert.ok(resumed, `resumed at the stored 5 MB: ${JSON.stringify(whisper)}`);
    // Files finished before the reload are not fetched again.
    assert.equal(server.requestsTo(`/bundles/${bundleName}/phi2.gguf`).length, 1);
  } finally {
    await context.close();
  }
});

test('running out of storage quota stops the download with a clear message', async () => {
  const { context, page } = await launch(newProfile());
  try {
    // Chromium enforces this quota on writes (its estimate() still reports the default, so this
    // exercises the write-time path rather than the up-front check).
    const cdp = await context.newCDPSession(page);
    await cdp.send('Storage.overrideQuotaForOrigin', { origin: server.origin, quotaSize: 5_000_000 });
    await page.goto(appUrl());
    await byTestId(page, 'download').click();
    const error = byTestId(page, 'error');
    await error.waitFor();
    assert.match(await error.innerText(), /storage quota is exceeded: free some space \(or delete a model\)/);
    assert.ok(await byTestId(page, 'download').isVisible(), 'Download is offered again');
    // Nothing is marked complete: a reload still offers the download instead of loading.
    await page.reload();
    await byTestId(page, 'download').waitFor();
  } finally {
    await context.close();
  }
});

test('a corrupt file on the server is refused with a clear message and never kept', async () => {
  const { context, page } = await launch(newProfile());
  try {
    server.state.corrupt.add('clip.safetensors');
    await page.goto(appUrl());
    await byTestId(page, 'download').click();
    const error = byTestId(page, 'error');
    await error.waitFor({ timeout: 120_000 });
    const message = await error.innerText();
    assert.match(message, /clip\.safetensors failed its checksum/, message);
    assert.match(message, /deleted/, message);
    // Storage keeps no copy of it, and the bundle is not marked complete.
    const stored = await page.evaluate(async () => {
      const names = [];
      const walk = async (dir, prefix) => {
        for await (const [name, handle] of dir.entries()) {
          if (handle.kind === 'directory') await walk(handle, `${prefix}${name}/`);
          else names.push(`${prefix}${name}`);
        }
      };
      await walk(await navigator.storage.getDirectory(), '');
      return names;
    });
    assert.ok(!stored.some((n) => n.endsWith('/clip.safetensors')), stored.join('\n'));
    assert.ok(await byTestId(page, 'download').isVisible(), 'Download is offered again');

    // Once the server is fixed, Download completes and the model loads.
    server.state.corrupt.clear();
    await byTestId(page, 'download').click();
    await waitReady(page);
  } finally {
    server.state.corrupt.clear();
    await context.close();
  }
});
