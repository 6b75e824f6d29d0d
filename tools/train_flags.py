"""The flags of tools/train.py: data, model, training safety and the self-supervised methods.

The classical EBM flags are in ebm_recipes.py. A method flag left unset (None)
takes the method's preset value (`keras_ebm.presets.defaults(method)`).
"""

import os

from absl import flags

from keras_ebm import presets
from keras_ebm.data.datasets import DEFAULT_MAX_IMAGE_PIXELS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PRESET = "the method's preset"
flags.DEFINE_enum("method", "moco", presets.METHODS, "Method to train.")
flags.DEFINE_string("dataset", "digits", "Data: 'digits' (embedded 8x8 images, no download), "
                    "'binary_digits' (EBMs), 'toy:<rings|moons|8gaussians|checkerboard>' (EBMs), "
                    "'tfds:NAME' (a prepared TFDS dataset, see --data_dir), 'folder:PATH' "
                    "(one sub-folder of images per class, PATH/<class>/<image>.png|jpg) or "
                    "'tfrecord:DIR' (shards of tools/folder_to_tfrecords.py; streamed).")
flags.DEFINE_enum("stream", "auto", ["auto", "always", "never"],
                  "Read images from disk batch by batch (tf.data) instead of decoding the whole "
                  "split into memory; auto: tfrecord datasets and splits over 1 GiB as float32.")
flags.DEFINE_integer("max_eval_examples", None, "Embed at most this many images of each split "
                     "for the probes and kNN (bounds their cost on large datasets).")
flags.DEFINE_string("data_dir", None, "TFDS data_dir holding prepared datasets.")
flags.DEFINE_integer("image_size", None, "Resize images to this size (square).")
flags.DEFINE_integer("max_train_examples", None, "Use at most this many training images.")
flags.DEFINE_string("backbone", None, f"Encoder: small_cnn, small_resnet, resnet18_cifar, "
                    f"resnet50, tiny_cnn (default: {PRESET}).")
flags.DEFINE_integer("steps_per_epoch", None, "Limit each epoch to this many steps.")
flags.DEFINE_enum("optimizer", None, ["adamw", "sgd", "lars"], f"Optimizer (default: {PRESET}).")
flags.DEFINE_enum("lr_scaling", None, ["none", "linear", "sqrt"],
                  "Scale --learning_rate with the global batch (x B/256 or x sqrt(B)).")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multi_worker", "tpu"],
                  "tf.distribute strategy; multi_worker reads TF_CONFIG.")
flags.DEFINE_bool("sync_batch_norm", False, "Synchronise batch-norm statistics across replicas.")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"],
                  "XLA: auto uses it on GPUs and TPUs (1.8x slower on CPUs for the SSL "
                  "backbones), and where an EBM preset asks for it (the toys' PCD, RBM blocks).")
flags.DEFINE_enum("mixed_precision", "none", ["none", "bfloat16", "float16"],
                  "Mixed precision; losses and energies stay in float32.")
flags.DEFINE_string("workdir", os.path.join(REPO, "runs", "default"), "Logs, checkpoints, model.")
flags.DEFINE_string("export_dir", None, "TF Serving base path (<repo>/saved_models/<method>).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_integer("keep_checkpoints", 3, "Per-epoch snapshots kept in <workdir>/checkpoints.")
flags.DEFINE_float("temperature", None, f"Softmax temperature (default: {PRESET}).")
for _name, _help in [("epochs", "Training epochs"), ("batch_size", "Global batch size"),
                     ("queue_size", "MoCo: negative keys in the queue"),
                     ("bn_splits", "MoCo: batch-norm groups (shuffle-BN substitute; 1 = off)"),
                     ("num_negatives", "PIRL: negatives drawn from the memory bank per step"),
                     ("jigsaw_resize", "PIRL: resize images to this size before the 3x3 grid"),
                     ("jigsaw_patch_size", "PIRL: random crop of this size from each cell"),
                     ("patch_dim", "PIRL: width of the shared per-patch embedding of g"),
                     ("projection_dim", "Output dimension of the projection head")]:
    flags.DEFINE_integer(_name, None, f"{_help} (default: {PRESET}).")
for _name, _help in [("learning_rate", "Peak learning rate"), ("weight_decay", "Weight decay"),
                     ("warmup_epochs", "Linear warm-up epochs before the cosine decay"),
                     ("momentum", "MoCo: EMA coefficient of the key encoder"),
                     ("bank_momentum", "PIRL: momentum of the memory-bank update"),
                     ("loss_weight", "PIRL: weight lambda of the patch NCE term"),
                     ("margin", "ContrastiveEmbedding: margin of the hinge on negative pairs"),
                     ("augment_strength", "Colour-jitter strength s"),
                     ("crop_scale_min", "Smallest area fraction of the random resized crop"),
                     ("blur_probability", "Probability of a Gaussian blur"),
                     ("grayscale_probability", "Probability of converting to grayscale"),
                     ("tau_base", "BYOL: EMA coefficient of the target at step 0 (cosine to 1)"),
                     ("barlow_lambda", "Barlow Twins: weight of the off-diagonal terms"),
                     ("barlow_scale_loss", "Barlow Twins: factor on the whole loss"),
                     ("sim_coeff", "VICReg: weight of the invariance (MSE) term"),
                     ("std_coeff", "VICReg: weight of the variance (std hinge) term"),
                     ("cov_coeff", "VICReg: weight of the covariance term")]:
    flags.DEFINE_float(_name, None, f"{_help} (default: {PRESET}).")
flags.DEFINE_enum("nce_form", None, ["nce", "infonce"], "PIRL: the lecture's NCE or InfoNCE.")
flags.DEFINE_enum("jigsaw_jitter", None, ["patch", "image"], "PIRL: augment each jigsaw patch "
                  "on its own (the paper) or the whole image before the cut "
                  f"(default: {PRESET}).")
flags.DEFINE_enum("negative_sampling", None, ["per_sample", "shared"], "PIRL: bank negatives "
                  f"drawn for each image (the paper) or one set per batch (default: {PRESET}).")
flags.DEFINE_enum("energy", None, ["cosine", "l2"], "ContrastiveEmbedding: 1 - cos or |a - b|.")
flags.DEFINE_list("projection_hidden_dims", None, "Hidden widths of the projection head.")
flags.DEFINE_list("predictor_hidden_dims", None, "BYOL, SimSiam: hidden widths of the predictor "
                  f"q (default: {PRESET}).")
flags.DEFINE_bool("simsiam_stop_gradient", None, "SimSiam: stop-gradient on the projection; "
                  "--nosimsiam_stop_gradient is the paper's ablation, which collapses.")
flags.DEFINE_bool("collapse_monitor", True, "Self-supervised methods: each epoch end, the "
                  "effective rank and embedding std of 512 training images; at a collapse the "
                  "run stops (status 1), the last good weights restored, nothing exported.")
flags.DEFINE_float("collapse_min_rank", 1.05, "--collapse_monitor: collapse when the effective "
                   "rank of the encoder's embeddings falls below this (or a std below "
                   "1e-3 / sqrt(D)).")
flags.DEFINE_float("collapse_min_rank_ratio", presets.COLLAPSE_MIN_RANK_RATIO,
                   "--collapse_monitor: collapse also when a rank falls below this fraction of "
                   "its highest value in the run (set from digits runs, docs/methods/README.md).")
flags.DEFINE_bool("projection_batch_norm", None, f"Batch norm in the head (default: {PRESET}).")
flags.DEFINE_bool("flip", None, f"Random horizontal flips (default: {PRESET}).")
flags.DEFINE_bool("evaluate", True, "Run the linear probes and kNN after training.")
flags.DEFINE_integer("probe_draws", None, "Label draws per probe (default: evaluation.PROTOCOL).")
flags.DEFINE_integer("max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS,
                     "Refuse images with more pixels (read from the image header, before "
                     "decoding: decompression bombs).")
flags.DEFINE_integer("collective_timeout", 600,
                     "--strategy=multi_worker: seconds a collective waits for a lost peer "
                     "before the run ends with an error instead of hanging.")
