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
