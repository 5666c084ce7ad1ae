"""Howard's training pipeline: the published two-stage BGMv2 recipe on data made on the fly.

Modules (imported on demand, so `import howard_core.train` stays cheap):

- `data`: synthetic composites with a realistic clean-plate gap; a user's fgr/pha/bgr(/clean) folder
- `losses`: the published base and refine losses
- `metrics`: SAD, MSE, gradient and connectivity errors, foreground MSE
- `baseline`: the clean-plate difference key the model is compared with
- `checkpoint`: Howard-format checkpoints and the resumable training state
- `trainer`: `train(TrainConfig) -> path` and `main(argv)` for `howard train`
- `evaluate`: `evaluate(model, ...) -> dict` and `main(argv)` for `howard eval`
- `plot`: loss curves as PNG
"""
