// Starts the page's WebAssembly (the worker starts its own from jnana-worker_loader.js).
import init from './jnana-app.js';

init({ module_or_path: './jnana-app_bg.wasm' }).catch((e) => {
  const p = document.createElement('p');
  p.className = 'fatal';
  p.setAttribute('role', 'alert');
  p.textContent = 'Jñāna could not start in this browser: ' + (e && e.message ? e.message : e);
  document.body.append(p);
});
