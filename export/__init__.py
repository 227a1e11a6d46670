"""genserve.export: everything that needs torch, from data to a published model version.

    registry.py   the families by manifest kind
    builders.py   what `genserve train/export <family>` runs
    core/         shared machinery: spec, options, training loop, ONNX export + parity, publishing
    data/         offline loaders: mnist, faces, prose (GPT corpus), labelled_texts
    metrics/      images (PSNR, FD, IS, faces), elbo
    families/     one folder per family: vae, dae, digits, dcgan, gpt, textclf

Workers and the gateway never import this package: they read the ONNX files and the manifest
it writes.
"""
