"""Training: `gptfast.training.loop.train(TrainConfig(...))` runs a training run.

One job per file: config (TrainConfig, config files), data (prepare/reuse,
random windows), runtime (device, precision, compile), optim (AdamW groups),
schedule (warmup + cosine), checkpoint (atomic safetensors + JSON), metrics
(JSONL/CSV, loss.png), progress (tqdm / plain lines), ddp (torchrun), sample
(a plain KV-cached sampler), loop (the trainer).
"""
