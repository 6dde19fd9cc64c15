"""Device-side transforms: pure JAX functions that run inside the jitted train step.

`augment` (image colour jitter, grayscale, blur, solarisation, normalisation), `clip_ops` (the same
per video clip, frame differences, flow scaling) and `audio` (log-mel spectrograms, SpecAugment).
Host-side data (sources, decoding, crops, clip sampling, grain pipelines) lives in `jaxssl.data`;
nothing here reads files or runs on the host.
"""
