"""genserve.export: everything that needs torch, from data to a published model version.

    registry.py   the one table of families: CLI name, spec, build, conditional variant, zoo,
                  Hugging Face import; `python -m genserve.export.registry` prints the zoo
    core/         shared machinery: spec, layers, checkpoint, training loop, ONNX export +
                  parity, publishing (the one manifest builder), Hugging Face reading, options
    data/         offline loaders: mnist, faces, prose (GPT corpus), labelled_texts
    metrics/      images (PSNR, FD, IS, faces), judge (the digit classifier), elbo
    families/     one folder per family: vae, dae, digits, dcgan (+ faces), gpt, textclf

A family's build trains (resuming its checkpoint), measures, exports and publishes a version
in the model repository. Workers and the gateway never import this package: they read the
ONNX files and the manifest it writes, and this package imports neither of them.
"""
