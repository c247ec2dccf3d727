"""Gradient-inversion attacks: an honest-but-curious server reconstructs clients' data from
what its ServerView shows (DLG, iDLG, Inverting Gradients, label-count recovery), scored by
MSE, PSNR, SSIM and label accuracy."""

from privfl.attacks.inversion.build import CENTRAL_DP_NOTE, create_inversion_observer
from privfl.attacks.inversion.config import METHOD_DEFAULTS, InversionConfig, InversionMethod
from privfl.attacks.inversion.dlg import dlg, dlg_batched, idlg, idlg_batched, recover_labels
from privfl.attacks.inversion.inverting_gradients import (
    inverting_gradients,
    inverting_gradients_batched,
    total_variation,
)
from privfl.attacks.inversion.labels import (
    FinalLayer,
    find_final_layer,
    idlg_label,
    label_counts,
    labels_from_counts,
    mean_prediction,
)
from privfl.attacks.inversion.lbfgs import RowLBFGS
from privfl.attacks.inversion.metrics import (
    Score,
    label_accuracy,
    match,
    mse,
    psnr,
    score,
    ssim,
)
from privfl.attacks.inversion.observer import (
    AttackSettings,
    InversionObserver,
    Status,
    TargetKind,
    gradient_noise,
    record_images,
)
from privfl.attacks.inversion.simulate import (
    can_batch,
    examples_used,
    local_update,
    local_updates,
    num_local_steps,
    single_gradient_target,
)
from privfl.attacks.inversion.target import InversionTarget, Reconstruction
from privfl.attacks.inversion.threat import InversionThreat

__all__ = [
    "AttackSettings",
    "CENTRAL_DP_NOTE",
    "FinalLayer",
    "InversionConfig",
    "InversionMethod",
    "InversionObserver",
    "InversionTarget",
    "METHOD_DEFAULTS",
    "Reconstruction",
    "RowLBFGS",
    "Score",
    "Status",
    "TargetKind",
    "InversionThreat",
    "can_batch",
    "create_inversion_observer",
    "dlg",
    "dlg_batched",
    "examples_used",
    "find_final_layer",
    "gradient_noise",
    "idlg",
    "idlg_batched",
    "idlg_label",
    "inverting_gradients",
    "inverting_gradients_batched",
    "label_accuracy",
    "label_counts",
    "labels_from_counts",
    "local_update",
    "local_updates",
    "match",
    "mean_prediction",
    "mse",
    "num_local_steps",
    "psnr",
    "record_images",
    "recover_labels",
    "score",
    "single_gradient_target",
    "ssim",
    "total_variation",
]
