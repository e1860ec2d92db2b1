// Makes the browser tests' bundle: a synthetic tiny bundle (random Phi-2/CLIP/projector) whose
// speech model is swapped for a real Whisper folder, so what the browser hears is real words.
// Usage: node make-bundle.mjs SYNTH_BUNDLE WHISPER_DIR OUT
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

const [synth, whisper, out] = process.argv.slice(2).map((p) => path.resolve(p));
if (!out) throw new Error('usage: node make-bundle.mjs SYNTH_BUNDLE WHISPER_DIR OUT');
fs.rmSync(out, { recursive: true, force: true });
fs.mkdirSync(out, { recursive: true });
const manifest = JSON.parse(fs.readFileSync(path.join(synth, 'manifest.json'), 'utf8'));
const speech = {
  speech_model: fs.readdirSync(whisper).find((f) => /^model\.(safetensors|gguf)$/.test(f)),
  speech_config: 'config.json',
  speech_tokenizer: 'tokenizer.json',
};
manifest.files = manifest.files.filter((f) => !(f.role in speech));
for (const f of manifest.files) fs.copyFileSync(path.join(synth, f.name), path.join(out, f.name));
for (const [role, file] of Object.entries(speech)) {
  const bytes = fs.readFileSync(path.join(whisper, file));
  const name = `whisper-${file}`;
  fs.writeFileSync(path.join(out, name), bytes);
  manifest.files.push({
    name, role, format: path.extname(file).slice(1), size: bytes.length,
    sha256: crypto.createHash('sha256').update(bytes).digest('hex'), urls: [name],
  });
}
manifest.name = `${manifest.name} + ${path.basename(whisper)}`;
fs.writeFileSync(path.join(out, 'manifest.json'), JSON.stringify(manifest, null, 2));
console.log(`wrote ${out}`);
