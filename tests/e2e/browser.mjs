// Shared helpers for the browser test and benchmark: Chromium (Debian's, driven by
// playwright-core), the app's page objects, and the renderer's peak memory.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import { execFileSync } from 'node:child_process';

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync',
  // A fake microphone (a beeping tone) that needs no permission prompt.
  '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
];

/** A Chromium profile in `dir` (kept between launches, as a returning visitor's). */
export async function launch(dir, extraArgs = []) {
  const context = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless: true,
    // --disable-gpu would also take WebGPU's SwiftShader adapter away.
    args: [...FLAGS.filter((f) => !(f === '--disable-gpu' && extraArgs.includes('--enable-unsafe-webgpu'))), ...extraArgs],
    viewport: { width: 1100, height: 900 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('console', (m) => { if (m.type() === 'error') console.log(`  [page ${m.type()}] ${m.text()}`); });
  page.on('pageerror', (e) => console.log(`  [page error] ${e.message}`));
  return { context, page };
}

export const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** Waits for the model to be loaded (from storage or after a download). */
export async function waitReady(page, timeout = 120_000) {
  await byTestId(page, 'ready').waitFor({ timeout });
}

/** The last answer once it is done: its token ids, text and stats line. */
export async function lastAnswer(page, timeout = 120_000) {
  const answer = byTestId(page, 'answer').last();
  await page.waitForFunction(() => {
    const all = document.querySelectorAll('[data-testid="answer"]');
    return all.length > 0 && all[all.length - 1].dataset.done === 'true';
  }, null, { timeout });
  const ids = (await answer.getAttribute('data-ids')).trim();
  return {
    ids: ids ? ids.split(' ').map(Number) : [],
    text: await answer.locator('.text').innerText(),
    stats: (await answer.locator('[data-testid="stats"]').count()) ? await answer.locator('[data-testid="stats"]').innerText() : '',
  };
}

/** Peak resident memory (VmHWM) of Chromium's renderer processes, in bytes: the page and its
 * worker live in one renderer. */
export function rendererPeakBytes() {
  let best = 0;
  const pids = execFileSync('pgrep', ['-f', 'type=renderer'], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
  for (const pid of pids) {
    try {
      const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
      best = Math.max(best, kb * 1024);
    } catch { /* exited */ }
  }
  return best;
}

/** What the browser itself offers WebGPU code in a dedicated worker (where the app's models
 * run), asked directly rather than through the app: `{ api, adapter }`, adapter null or
 * `{ architecture, fallback }`. It asks from a page of `origin` outside the app, whose
 * Content-Security-Policy forbids the blob: worker the question runs in. */
export async function browserWebgpu(context, origin) {
  const page = await context.newPage();
  try {
    await page.goto(`${origin}/webgpu-probe`);
    return await askWorker(page);
  } finally {
    await page.close();
  }
}

function askWorker(page) {
  return page.evaluate(async () => {
    const source = `(async () => {
      if (!navigator.gpu) return postMessage({ api: false, adapter: null });
      const a = await navigator.gpu.requestAdapter();
      postMessage({ api: true, adapter: a && { architecture: a.info?.architecture ?? '', fallback: !!a.info?.isFallbackAdapter } });
    })();`;
    const url = URL.createObjectURL(new Blob([source], { type: 'text/javascript' }));
    const worker = new Worker(url);
    try {
      return await new Promise((resolve, reject) => {
        worker.onmessage = (e) => resolve(e.data);
        worker.onerror = (e) => reject(new Error(e.message));
      });
    } finally {
      worker.terminate();
      URL.revokeObjectURL(url);
    }
  });
}

/** The lines of chrome://gpu that say why WebGPU is (un)available: its feature status, the
 * problems Chromium detected and the GPU process's crash count. */
export async function gpuDiagnostics(context) {
  const page = await context.newPage();
  try {
    await page.goto('chrome://gpu');
    await page.waitForTimeout(2_000);
    const lines = await page.evaluate(() => {
      const out = [];
      const walk = (n) => {
        if (n.nodeType === Node.TEXT_NODE) {
          const v = n.textContent.trim();
          if (v) out.push(v);
          return;
        }
        if (n.shadowRoot) walk(n.shadowRoot);
        for (const c of n.childNodes) walk(c);
      };
      walk(document.body);
      return out;
    });
    const valueAfter = (label) => {
      const i = lines.indexOf(label);
      return i < 0 ? '?' : lines.slice(i + 1, i + 3).find((l) => l !== ':') ?? '?';
    };
    const problems = lines.indexOf('Problems Detected');
    const webgpuProblems = problems < 0 ? [] : lines.slice(problems + 1, problems + 60)
      .filter((l) => /webgpu|dawn|vulkan|swiftshader/i.test(l) && l !== 'webgpu');
    return [
      `WebGPU feature status: ${valueAfter('WebGPU:')}`,
      `GPU process crash count: ${valueAfter('GPU process crash count')}`,
      ...webgpuProblems,
    ].join('; ');
  } catch (e) {
    return `chrome://gpu could not be read: ${e.message}`;
  } finally {
    await page.close();
  }
}
