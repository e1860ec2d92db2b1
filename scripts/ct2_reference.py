"""Greedy transcription by the reference Whisper decoder, CTranslate2, from log-mel features.

    python ct2_reference.py MODEL_DIR FEATURES.npy

Prints JSON: the prompt CTranslate2 was given, the language it detected (multilingual models)
and the generated token ids (greedy, its default suppression of blank and listed tokens).
"""
import json
import sys

import ctranslate2
import numpy as np

model_dir, features_path = sys.argv[1], sys.argv[2]
features = np.load(features_path).astype(np.float32)
model = ctranslate2.models.Whisper(model_dir, device="cpu", compute_type="float32")
features = ctranslate2.StorageView.from_array(features)
language = None
if model.is_multilingual:
    language = model.detect_language(features)[0][0][0]
    prompt = ["<|startoftranscript|>", language, "<|transcribe|>", "<|notimestamps|>"]
else:
    prompt = ["<|startoftranscript|>", "<|notimestamps|>"]
result = model.generate(features, [prompt], beam_size=1)[0]
print(json.dumps({"prompt": prompt, "language": language, "ids": result.sequences_ids[0]}))
