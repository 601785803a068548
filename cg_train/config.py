"""The one config schema of cg-train: typed dataclasses validated through OmegaConf.

Sources merge in this order (later wins): schema defaults -> ``--config`` YAML
files -> ``key=value`` overrides -> command-line flags. Unknown keys, wrong
types and out-of-range values fail at start-up with one line naming the key.

Each field's ``metadata`` carries its CLI flags and help text, so ``--help``,
the YAML schema and validation can never drift apart. A field without
``flags`` is settable from YAML or ``section.key=value`` only.
"""
from __future__ import annotations

import dataclasses
import difflib
import getpass
import os
import platform
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError


def opt(default: Any, help: str, *flags: str, check: Optional[Callable[[Any], Optional[str]]] = None,
        metavar: Optional[str] = None, **kw: Any) -> Any:
    """A schema field with its CLI flags, help text and an optional range check.

    ``check(value)`` returns an error fragment (e.g. "must be in [0, 1]") or None.
    """
    meta = {"help": help, "flags": flags, "check": check, "metavar": metavar}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=meta, **kw)
    return field(default=default, metadata=meta, **kw)


def at_least(lo: float) -> Callable[[Any], Optional[str]]:
    return lambda v: None if v is None or v >= lo else f"must be >= {lo}"


def positive(v: Any) -> Optional[str]:
    return None if v > 0 else "must be > 0"


def in_range(lo: float, hi: float, hi_open: bool = False) -> Callable[[Any], Optional[str]]:
    def check(v: Any) -> Optional[str]:
        ok = lo <= v < hi if hi_open else lo <= v <= hi
        return None if ok else f"must be in [{lo}, {hi}{')' if hi_open else ']'}"
    return check


def one_of(*choices: str) -> Callable[[Any], Optional[str]]:
    return lambda v: None if v in choices else f"must be one of {', '.join(choices)}"


@dataclass
class DataConfig:
    dir: Optional[str] = opt(None, "dataset root (the DATA_DIR positional argument)")
    dataset: str = opt("imagefolder", "dataset reader (see `cg-train list datasets`)", "--dataset")
    test_dir: Optional[str] = opt(
        None, "evaluate 'test' on the val split of this other dataset root (e.g. train on an easy "
        "subset, test on the original ImageNet)", "--test-imagenet-dir", "--test-dir", metavar="DIR")
    loader: str = opt("torchvision", "data loader backend (see `cg-train list loaders`)", "--loader")
    workers: int = opt(4, "data-loading worker processes per training process (at most the CPUs it may use)", "-j", "--workers",
                       check=at_least(0))
    batch_size: int = opt(256, "mini-batch size summed over all processes (as in seed 004); each of N "
                          "processes gets batch_size/N", "-b", "--batch-size", check=at_least(1))
    eval_batch_size: Optional[int] = opt(None, "evaluation batch size over all processes (default: "
                                         "--batch-size)", "--eval-batch-size", check=at_least(1))
    image_size: Optional[int] = opt(None, "crop size fed to the model (default: the model's, e.g. 224 "
                                    "for resnet18, 32 for cifar_resnet*)", "--image-size", check=at_least(8))
    resize_size: Optional[int] = opt(None, "shorter side is resized to this before the center crop "
                                     "(default: the model's, e.g. 256)", "--resize-size", check=at_least(8))
    random_augmentations: bool = opt(False, "train with RandomResizedCrop + horizontal flip (default: "
                                     "resize + center crop, no randomness)", "--random-augmentations")
    augment: str = opt("auto", "augmentation preset of both loaders (see `cg-train list augmentations`): auto "
                       "(random_resized_crop with --random-augmentations, else none), none, random_resized_crop, "
                       "cifar (pad 4 + random crop + flip, CIFAR mean/std)", "--augment")
    sample_size: int = opt(50000, "size of the pristine / corrupt / train_sample evaluation subsets "
                           "(capped at what exists)", "--sample-size", check=at_least(0))
    test_split: str = opt("val", "split evaluated as 'test' (clothing1m/clothing100k also have 'test', "
                          "their clean test set; see `cg-train datasets`)", "--test-split")
    listing_cache: Optional[str] = opt(
        None, "keep class-folder listings in DIR and list again only folders that changed (ImageNet's 1.28M "
        "train files: ~5 s per start on a local disk, minutes on NFS, on every rank)", "--listing-cache",
        metavar="DIR")
    dali_threads: Optional[int] = opt(None, "--loader dali: decoding threads per process (default: "
                                      "--workers, at least 1)", "--dali-threads", check=at_least(1))
    dali_prefetch: int = opt(2, "--loader dali: batches prepared ahead (DALI's prefetch queue depth)",
                             "--dali-prefetch", check=at_least(1))


@dataclass
class NoiseConfig:
    corrupt_fraction: float = opt(
        0.0, "fraction of training samples whose label is re-drawn from the true one (exactly round(f*N) "
        "samples; samples with an unknown true label are never chosen); see --noise-type",
        "--corrupt-fraction", check=in_range(0.0, 1.0))
    noise_type: str = opt("uniform", "how a re-drawn label is chosen: uniform (any class, the true one "
                          "included, so about 1/K stay correct: seed 004), symmetric (any other class: all "
                          "f*N are wrong, seed 002's 'uniform'), flip (true class + 1 mod K, seed 002's "
                          "'flip'), or instance (the class a trained model confuses the image with: "
                          "--noise-confusions)", "--noise-type")
    confusions: Optional[str] = opt(None, "--noise-type instance: the confusions table of a checkpoint "
                                    "(`cg-train confusions CKPT DATA_DIR -o FILE.parquet`); a corrupted sample "
                                    "takes its top_wrong_class", "--noise-confusions", metavar="FILE.parquet")
    instance_pick: str = opt("random", "--noise-type instance: which round(f*N) samples are corrupted: random "
                             "(the seeded choice of the other types) or confusable (those with the highest "
                             "p_top_wrong, ties by index: the 'hard' instance-dependent noise)",
                             "--instance-noise-pick", metavar="random|confusable",
                             check=one_of("random", "confusable"))
    exclude: Optional[str] = opt(None, "train without the samples listed in FILE (one index or path per line, "
                                 "or a .parquet/.csv with an 'index' column); remove-and-retrain, seed 002",
                                 "--exclude", metavar="FILE")
    remove_ratio: float = opt(0.0, "train without the round(r*N) samples --detector scores highest in --scores "
                              "(remove-and-retrain, seed 002 step 3)", "--remove-ratio", metavar="R",
                              check=in_range(0.0, 1.0, hi_open=True))
    scores: Optional[str] = opt(None, "scores.parquet written by `cg-analyze noise RUN_DIR` (for --remove-ratio)",
                                "--scores", metavar="SCORES.parquet")
    detector: Optional[str] = opt(None, "which detector's scores --remove-ratio ranks by (a column of --scores, "
                                  "e.g. aum, mean_loss, lstm)", "--detector", metavar="NAME")
    folds: int = opt(0, "split the training set into K folds, stratified by observed label and seeded by --seed "
                     "(the same seed gives the same folds); with --fold I the run trains on the other K-1 folds "
                     "(out-of-sample confident learning: `cg-launch kfold` runs all K)", "--folds", metavar="K",
                     check=lambda v: None if v == 0 or v >= 2 else "must be 0 (no folds) or >= 2")
    fold: Optional[int] = opt(None, "with --folds K: train without fold I (0..K-1) and, after training, predict it "
                              "(heldout_predictions.parquet)", "--fold", metavar="I", check=at_least(0))
    labels: Optional[str] = opt(None, "replace observed labels after the corruption with a label table (Parquet with "
                                "columns index, old_label, new_label[, source, score], as `cg-analyze relabel` "
                                "writes it): data debugging, seed 002 section 4.3", "--labels", metavar="FILE.parquet")


@dataclass
class ModelConfig:
    arch: str = opt("resnet18", "model architecture (see `cg-train list models`)", "-a", "--arch")
    pretrained: bool = opt(False, "start from torchvision's ImageNet weights, read from the torch hub cache "
                           "($TORCH_HOME/hub/checkpoints; never downloaded); a classifier of another size starts "
                           "fresh", "--pretrained")


@dataclass
class OptimConfig:
    optimizer: str = opt("SGD", "optimizer: SGD, or RM3 (step along the median of the last 3 mini-batch "
                         "gradients, seed 004; needs --momentum 0 and keeps 3 gradient copies per parameter: "
                         "3x the model's size in extra memory); see `cg-train list optimizers`", "--optimizer")
    lr: float = opt(0.1, "initial learning rate", "--lr", "--learning-rate", check=at_least(0.0))
    momentum: float = opt(0.9, "SGD momentum (RM3 needs 0)", "--momentum", check=in_range(0.0, 1.0, hi_open=True))
    weight_decay: float = opt(1e-4, "weight decay (L2 added to the gradient)", "--weight-decay", "--wd",
                              check=at_least(0.0))


@dataclass
class ScheduleConfig:
    scheduler: str = opt("auto", "learning-rate schedule stepped once per epoch: auto (multistep when "
                         "--lr-milestones is given, else step for resnet18 and cosine otherwise, as seed 004), "
                         "step, multistep, cosine, constant", "--lr-scheduler")
    step_size: int = opt(30, "epochs between decays of the step schedule", "--lr-step-size",
                         check=at_least(1))
    gamma: float = opt(0.1, "decay factor of the step and multistep schedules", "--lr-gamma",
                       check=in_range(0.0, 1.0))
    milestones: list[int] = opt([], "epochs after which the multistep schedule multiplies the LR by --lr-gamma, "
                                "comma-separated (the CIFAR KD recipe: 150,180,210 of 240)", "--lr-milestones",
                                check=lambda v: None if list(v) == sorted(set(v)) and all(m >= 1 for m in v)
                                else "must be increasing epochs >= 1", metavar="E1,E2,...")


@dataclass
class TrainConfig:
    epochs: int = opt(90, "number of training epochs", "--epochs", check=at_least(0))
    seed: int = opt(0, "seed of everything random: model init, label corruption, subset choice, sample "
                    "order, augmentations (the same on any machine and any number of processes)", "--seed",
                    check=at_least(0))
    mixed_precision: Optional[str] = opt(None, "automatic mixed precision through accelerate: no, fp16, bf16 "
                                         "(default: accelerate launch's --mixed_precision, else no)",
                                         "--mixed-precision", check=one_of("no", "fp16", "bf16"))
    grad_accum_steps: int = opt(1, "accumulate gradients over this many mini-batches per optimizer step",
                                "--grad-accum-steps", check=at_least(1))
    print_freq: int = opt(10, "log the training loss to train.csv every N steps", "-p", "--print-freq",
                          check=at_least(1))
    cpu: bool = opt(False, "train on CPU even when CUDA is available", "--cpu")
    deepspeed: Optional[str] = opt(None, "train through DeepSpeed ZeRO with this config (launch/deepspeed/"
                                   "zero1.json or zero2.json; pays off for large models, not for ResNets)",
                                   "--deepspeed", metavar="FILE.json")
    progress: bool = opt(True, "show tqdm progress bars (main process only)", "--progress")


#: ``--log-with`` choices (cg_train/recorders/trackers.py)
TRACKERS = ("tensorboard", "wandb", "mlflow")


@dataclass
class OutputConfig:
    dir: str = opt("output", "where CSVs, checkpoints, config.yaml and logs are written", "--output-dir",
                   metavar="DIR")
    resume: Optional[str] = opt(
        None, "continue the run in OUTPUT_DIR from its checkpoint.pth.tar (a fresh start if there is none yet; "
        "output.resume=auto); --resume-from PATH resumes from another checkpoint file", "--resume")
    log_with: list[str] = opt([], "also log per-step loss, lr, images/s, every per-epoch metric of the CSVs and the "
                              "config to these experiment trackers (accelerate's), comma-separated: tensorboard, "
                              "wandb, mlflow; files under OUTPUT_DIR (WANDB_MODE=offline: no network); a resumed run "
                              "continues the same tracker run", "--log-with", metavar="TRACKERS",
                              check=lambda v: next((f"has {t!r}: must be tensorboard, wandb or mlflow, each once"
                                                    for t in v if t not in TRACKERS or list(v).count(t) > 1), None))
    tracker_project: str = opt("cg-train", "--log-with: the project (tensorboard: subfolder; wandb: project; mlflow: "
                               "experiment) the run is logged under; the run is named after OUTPUT_DIR",
                               "--tracker-project", metavar="NAME")


@dataclass
class RecordConfig:
    paths: bool = opt(False, "log every training sample's prediction at every step (loss, p_observed, p_true, "
                      "margin, top-k...) to OUTPUT_DIR/paths/epoch=E/rank=R/*.parquet (learning paths, seeds "
                      "000/002)", "--paths")
    paths_eval: bool = opt(False, "at every evaluation, also run the whole training set in eval mode without "
                           "augmentation and log the same columns to OUTPUT_DIR/paths_eval/", "--paths-eval")
    paths_topk: int = opt(5, "classes and probabilities kept per path row (capped at the number of classes; "
                          "set it to the class count for exact `cg-train paths export-td`)", "--paths-topk",
                          check=at_least(1))
    paths_rows_per_part: int = opt(1_000_000, "rows per Parquet part file of the path logs (a crash loses at "
                                   "most the rows not yet in a part)", check=at_least(1))
    store_learned: bool = opt(False, "after training, evaluate the whole training set without augmentation "
                              "and write learned_examples.csv / not_learned_examples.csv (seed 004)",
                              "--store-learned")
    p_smoothing: float = opt(0.0, "keep seed 000's per-sample running average of the predicted distribution, "
                             "q <- (1-a) q + a softmax(logits/tau), on the device with this a (0: off; seed 000 "
                             "uses 0.05); saved to p_smoothing.npy every epoch (CIFAR/Tiny-sized runs)",
                             "--p-smoothing", metavar="A", check=in_range(0.0, 1.0))
    p_smoothing_tau: float = opt(1.0, "softmax temperature of --p-smoothing (seed 000's --filt_tau)",
                                 "--p-smoothing-tau", check=positive)
    p_smoothing_init: str = opt("first", "starting value of each --p-smoothing row: first (the sample's first "
                                "prediction, seed 000), onehot (its observed label) or uniform (1/K); a short run's "
                                "table is mostly this value (docs/supervision.md)", "--p-smoothing-init",
                                check=one_of("first", "onehot", "uniform"))
    predict_heldout: bool = opt(False, "after training, predict every sample left out of training (--exclude, "
                                "--remove-ratio; always on with --fold) in eval mode, without augmentation, and write "
                                "heldout_predictions.parquet (every class's probability)", "--predict-heldout")
    seed002_logs: bool = opt(False, "write seed 002's train_log.csv (per epoch: train/valid error and loss) "
                             "and results_valid.csv (per test sample, latest evaluation)", "--seed002-logs")


#: Separates several --teacher checkpoints (as in PATH: cg-launch's run folders contain commas).
TEACHER_SEPARATOR = ":"


def split_teachers(value: Optional[str]) -> list[str]:
    """``--teacher a.pth:b.pth`` -> ``["a.pth", "b.pth"]``."""
    return [p.strip() for p in (value or "").split(TEACHER_SEPARATOR) if p.strip()]


@dataclass
class SupervisionConfig:
    """What the network is trained toward (seeds 000, 001, 003; docs/supervision.md)."""

    method: str = opt("ce", "training target (see `cg-train list methods`): ce, ls, kd, self_kd, filter_kd, sl, "
                      "sl_enc, sl_ens, sl_kd, and the feature-level methods fitnet, at, sp, cc, vid, rkd, pkt, ab, "
                      "ft, fsp, nst, crd (docs/feature_distillation.md)", "--method")
    teacher: Optional[str] = opt(None, "teacher checkpoint of kd / sl* / feature methods (any cg-train checkpoint, "
                                 "e.g. RUN/model_best.pth.tar; its arch is read from it); several, ':'-separated, "
                                 "for sl_ens", "--teacher", metavar="CKPT")
    targets: Optional[str] = opt(None, "filter_kd: a teacher run's p_smoothing table [N, K] (its "
                                 "p_smoothing_best.npy), rows by sample index", "--targets", metavar="TABLE.npy")
    accept_weak_targets: bool = opt(False, "filter_kd: train on a --targets table even when it is still mostly "
                                    "its starting values (refused otherwise; docs/supervision.md)",
                                    "--accept-weak-targets")
    smoothing: float = opt(0.1, "ls: label smoothing s; sl_enc: the teacher's share of the initial label",
                           "--smoothing", check=in_range(0.0, 1.0))
    temperature: float = opt(4.0, "softmax temperature of KD terms and teacher-initialised labels (seed 001's "
                             "--kd_T)", "--kd-temperature", check=positive)
    ce_weight: Optional[float] = opt(None, "weight of the hard-label CE (sl_kd: of the soft-label loss); seed 001's "
                                     "-r (default: 0.1 for kd/self_kd/sl_kd, 1 for the feature methods, as "
                                     "RepDistiller's scripts)", "--kd-ce-weight", check=at_least(0.0))
    kd_weight: Optional[float] = opt(None, "weight of the KD term (kd, self_kd, sl_kd, feature methods); seed 001's "
                                     "-a (default: 0.9 for kd/self_kd/sl_kd, 0 for the feature methods)",
                                     "--kd-weight", check=at_least(0.0))
    feature_weight: Optional[float] = opt(None, "weight of a feature method's feature term; RepDistiller's -b "
                                          "(default: the method's, e.g. fitnet 100, at 1000, sp 3000; see "
                                          "`cg-train list methods`)", "--feature-weight", check=at_least(0.0))
    init_epochs: Optional[int] = opt(None, "epochs of a feature method's first stage, before the --epochs of "
                                     "training (FitNet's hint stage, AB/FT/FSP pre-training; RepDistiller's "
                                     "--init_epochs; default: 30 for ab, ft, fsp, 0 otherwise)", "--init-epochs",
                                     check=at_least(0))
    init_lr: Optional[float] = opt(None, "learning rate of that first stage, constant (default: --lr; ft: 0.01, "
                                   "as RepDistiller for its ResNet/WRN students)", "--init-lr", check=at_least(0.0))
    hint_layer: int = opt(2, "fitnet: which of RepDistiller's feature maps is the hint (feat[HINT_LAYER] of both "
                          "models: 0 the stem, 1.. the stages)", "--hint-layer", check=at_least(0))
    student_features: list[str] = opt([], "override the student features the method compares: references such as "
                                      "feat[1:-1], preact[2], layer3, layers.2.add, fc:in, embedding "
                                      "(docs/feature_distillation.md)", "--student-features", metavar="REF,...")
    teacher_features: list[str] = opt([], "override the teacher features the method compares (as "
                                      "--student-features)", "--teacher-features", metavar="REF,...")
    feat_dim: int = opt(128, "cc and crd: size of the linear embedding heads on the penultimate features "
                        "(RepDistiller's --feat_dim)", "--feat-dim", check=at_least(1))
    nce_k: int = opt(16384, "crd: negatives per sample drawn from the memory (RepDistiller's --nce_k)", "--nce-k",
                     check=at_least(1))
    nce_t: float = opt(0.07, "crd: temperature of the contrast scores exp(v.m / T) (RepDistiller's --nce_t)",
                       "--nce-t", check=positive)
    nce_m: float = opt(0.5, "crd: momentum of the memory update m <- norm(M m + (1 - M) v) (RepDistiller's --nce_m)",
                       "--nce-m", check=in_range(0.0, 1.0, hi_open=True))
    crd_memory_blocks: int = opt(64, "crd: the memory's row blocks, the unit of its sharding and of the "
                                 "negatives' draws (at least the number of processes and at most --nce-k; the "
                                 "same value gives the same negatives on any number of processes)",
                                 "--crd-memory-blocks", check=at_least(1))
    crd_negatives: str = opt("other_class", "crd: where negatives come from: other_class (RepDistiller's --mode "
                             "exact) or any trained sample", "--crd-negatives", check=one_of("other_class", "any"))
    label_lr: float = opt(0.5, "sl*: step size of each learned label's update per visit", "--label-lr",
                          check=at_least(0.0))
    label_anchor: float = opt(0.0, "sl*: weight of CE(observed label, learned label) in the label update",
                              "--label-anchor", check=at_least(0.0))


@dataclass
class SpeedConfig:
    """The fast path (docs/throughput.md). On by default only what keeps results those of the
    plain path; what changes the arithmetic is opt-in."""

    keep_freed_memory: bool = opt(True, "CPU training: freed tensor memory stays in the process for the next "
                                  "step's tensors (glibc malloc's mmap and trim thresholds raised to 1 GiB) instead "
                                  "of going back to the OS and page-faulting in again (about 20,000 page faults a "
                                  "step for resnet18 at 32 px, batch 64); results unchanged, the process keeps its "
                                  "peak memory", "--keep-freed-memory")

    channels_last: bool = opt(False, "NHWC memory order for the model and the loaders' images (Tensor Cores "
                              "prefer it with AMP: often 10-30 percent faster convnets on a GPU; other conv kernels, so results "
                              "differ in rounding from the default)", "--channels-last")
    compile: bool = opt(False, "torch.compile the model for training (minutes of compiling at start, then "
                        "fused kernels; falls back to eager with a one-line warning if compiling fails)",
                        "--compile")
    cudnn_benchmark: bool = opt(True, "let cuDNN time its convolution algorithms at start and keep the fastest "
                                "(GPU only; --no-cudnn-benchmark for run-to-run identical algorithm choice)",
                                "--cudnn-benchmark")
    fused_optimizer: bool = opt(False, "SGD as one fused kernel over all parameters (GPU; also spares fp16's "
                                "per-step host sync of the inf check); default: torch's foreach SGD",
                                "--fused-optimizer")
    dali_readers: int = opt(32, "--loader dali: threads per process reading files ahead of the step (network "
                            "storage: 0.5-2 ms per file; 0 reads on the training thread)", "--dali-readers",
                            check=at_least(0))


@dataclass
class AugmentConfig:
    """Seed 001's data augmentations, applied on the device after the loader (docs/kd_augmentation.md)."""

    da: str = opt("identity", "augmentation applied to each training batch on the device, after the loader (see "
                  "`cg-train list da`): identity, flip, flip_crop, cutout, autoaugment, mixup, cutmix, "
                  "cutmix_pick, cutmix_pick_s_ent, cutmix_pick_t_ent", "--da", "--mix-mode")
    cut_size: int = opt(16, "cutout: side of the square set to zero (seed 001's --cut_size)", "--cut-size",
                        check=at_least(1))
    crop_padding: int = opt(4, "flip_crop: zero padding of the random crop (CIFAR's pad-4)", "--crop-padding",
                            check=at_least(0))
    autoaugment_policy: str = opt("cifar10", "autoaugment: torchvision policy cifar10, imagenet or svhn",
                                  "--autoaugment-policy", check=one_of("cifar10", "imagenet", "svhn"))
    mix_alpha: float = opt(1.0, "mixup/cutmix: lambda ~ Beta(alpha, alpha)", "--mix-alpha", check=positive)
    n_pick: int = opt(64, "cutmix_pick: mixed images kept per batch, those with the highest criterion",
                      "--n-pick", check=at_least(1))
    mix_n_run: int = opt(4, "cutmix_pick: CutMix is drawn this many times per batch to make the candidate pool "
                         "(pool = mix_n_run x batch)", "--mix-n-run", check=at_least(1))
    pick_criterion: str = opt("kld", "cutmix_pick: s_ent (student entropy), t_ent (teacher entropy) or kld "
                              "(KL(teacher || student) at --kd-temperature); highest values are kept",
                              "--cutmix-pick-criterion", check=one_of("s_ent", "t_ent", "kld"))
    lw_mix: Optional[str] = opt(None, "seed 001's --lw_mix a,b,c (method kd): the student sees the batch AND its "
                                "augmented copy; loss = r*CE(x) + kd_weight*(a*KL(x) + b*mixed-label CE(x_aug) + "
                                "c*KL(x_aug)); unset: the augmented batch replaces the batch", "--lw-mix",
                                metavar="A,B,C")
    t_output_as_target_for_input_mix: bool = opt(
        False, "with --lw-mix: the teacher's output on the augmented image is the KL target of x_aug (seed "
        "001's scripts); otherwise the targets' mixture lam*t(x_a)+(1-lam)*t(x_b) of the teacher's logits",
        "--t-output-as-target-for-input-mix")
    fix_student: bool = opt(False, "run the training epochs without updating anything (no backward, no "
                            "optimizer step, BatchNorm in eval mode): seed 001's --fix-student", "--fix-student")
    check_ce_var: bool = opt(False, "with --fix-student: write t_stddev.csv per epoch (T. stddev: std of the "
                             "teacher's mean probability; teacher-student CE mean and variance)", "--check-ce-var")


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: ScheduleConfig = field(default_factory=ScheduleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    record: RecordConfig = field(default_factory=RecordConfig)
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    supervision: SupervisionConfig = field(default_factory=SupervisionConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


#: Keys of a saved ``config.yaml`` that describe the run rather than configure it.
META_KEY = "meta"


def schema_fields() -> Iterator[tuple[str, dataclasses.Field]]:
    """Yield ``("section.key", field)`` for every leaf of the schema."""
    for section in dataclasses.fields(Config):
        for f in dataclasses.fields(section.default_factory()):  # type: ignore[misc]
            yield f"{section.name}.{f.name}", f


def all_keys() -> list[str]:
    return [key for key, _ in schema_fields()]


def _one_line(exc: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(exc, "full_key", None) or ""
    msg = str(getattr(exc, "msg", exc)).splitlines()[0]
    if "not in" in msg or "Key" in msg and "not" in msg:
        sections = [f.name for f in dataclasses.fields(Config)]
        close = difflib.get_close_matches(key, all_keys() if "." in key else sections, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return ConfigError(f"{source}: unknown config key {key!r}{hint}; see `cg-train --help` for the keys")
    return ConfigError(f"{source}: bad value for {key or 'config'}: {msg}")


def _merge(base: DictConfig, other: Any, source: str) -> DictConfig:
    try:
        return OmegaConf.merge(base, other)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        raise _one_line(exc, source) from None


def load_yaml(path: str | os.PathLike) -> DictConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--config: file {path} does not exist")
    try:
        loaded = OmegaConf.load(path)
    except Exception as exc:  # yaml.YAMLError and friends
        raise ConfigError(f"--config: {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(loaded, DictConfig):
        raise ConfigError(f"--config: {path} must hold a mapping of sections (data:, optim:, ...)")
    loaded.pop(META_KEY, None)
    return loaded


def full_key(key: str) -> str:
    """``epochs`` -> ``train.epochs`` when the leaf name is unique in the schema; other keys unchanged.

    Dashes are allowed, so seed 004's ``weight-decay=0.0`` typo works.
    """
    if "." not in key:
        matches = [k for k in all_keys() if k.split(".", 1)[1] == key.replace("-", "_")]
        if len(matches) == 1:
            return matches[0]
    return key


def parse_override(item: str) -> DictConfig:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {item!r} must look like section.key=value (e.g. optim.lr=0.05)")
    key = full_key(key)
    try:
        return OmegaConf.from_dotlist([f"{key}={value}"])
    except OmegaConfBaseException as exc:
        raise _one_line(exc, f"override {item!r}") from None


def build_config(yaml_files: list[str] = (), overrides: list[str] = (),
                 flags: Optional[dict[str, Any]] = None,
                 mappings: Sequence[tuple[str, Mapping[str, Any]]] = ()) -> Config:
    """Merge defaults, YAML files, ``mappings``, ``key=value`` overrides and parsed flags; validate.

    ``mappings`` are (source name, nested dict) pairs such as a sweep's inline base
    and one point of its axes; the source name appears in error messages.
    """
    cfg: DictConfig = OmegaConf.structured(Config)
    for path in yaml_files:
        cfg = _merge(cfg, load_yaml(path), f"--config {path}")
    for source, mapping in mappings:
        cfg = _merge(cfg, OmegaConf.create(dict(mapping)), source)
    for item in overrides:
        cfg = _merge(cfg, parse_override(item), f"override {item!r}")
    if flags:
        cfg = _merge(cfg, OmegaConf.create(nest_keys(flags)), "command line")
    config: Config = OmegaConf.to_object(cfg)  # type: ignore[assignment]
    validate(config)
    return config


def nest_keys(values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``{"optim.lr": 0.1}`` -> ``{"optim": {"lr": 0.1}}``."""
    nested: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        section, name = key.split(".", 1)
        nested.setdefault(section, {})[name] = value
    return nested


def validate(cfg: Config) -> None:
    """Range checks from the schema. Names (models, datasets, methods, ...) are the registries' to check:
    ``cg_train.checks.check_names``, so the schema imports none of them."""
    for key, f in schema_fields():
        section, name = key.split(".", 1)
        value = getattr(getattr(cfg, section), name)
        check = f.metadata.get("check")
        if check is not None and value is not None:
            problem = check(value)
            if problem:
                raise ConfigError(f"{_flag_name(key, f)}={value!r} {problem}")


def _flag_name(key: str, f: dataclasses.Field) -> str:
    flags = f.metadata.get("flags") or ()
    long_flags = [x for x in flags if x.startswith("--")]
    return f"{long_flags[0]} ({key})" if long_flags else key


def flag_name(key: str) -> str:
    """``data.batch_size`` -> ``--batch-size (data.batch_size)``: how one-line errors name a key."""
    return _flag_name(key, dict(schema_fields())[key])


# --------------------------------------------------------------------------- saving

def _git_commit() -> dict[str, Any]:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit or None, "dirty": bool(dirty) if commit else None}


def package_versions() -> dict[str, Optional[str]]:
    from importlib import metadata

    names = ["cg-train", "torch", "torchvision", "accelerate", "numpy", "pyarrow", "omegaconf",
             "nvidia-dali-cuda120", "nvidia-dali-cuda130", "deepspeed", "submitit"]
    out: dict[str, Optional[str]] = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    import torch

    out["torch"] = str(torch.__version__)  # with the build tag, e.g. 2.14.1+cu130
    out["cuda"] = torch.version.cuda
    return out


def run_metadata(world_size: int) -> dict[str, Any]:
    return {
        "git": _git_commit(),
        "versions": package_versions(),
        "command": [Path(sys.argv[0]).name, *sys.argv[1:]],
        "world_size": world_size,
        "host": socket.gethostname(),
        "user": getpass.getuser(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def to_yaml(cfg: Config, meta: Optional[dict[str, Any]] = None) -> str:
    """The resolved config as YAML, with a ``meta`` section that ``--config`` ignores on reload."""
    conf = OmegaConf.structured(cfg)
    text = OmegaConf.to_yaml(conf)
    if meta is not None:
        text += OmegaConf.to_yaml(OmegaConf.create({META_KEY: meta}))
    return text


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]
