"""`--data cifar10`: the CIFAR loader (`adkit.data.cifar`) fixed to CIFAR-10."""

from __future__ import annotations

from functools import partial

from . import cifar

records = partial(cifar.records, dataset="cifar10")
check = partial(cifar.check, dataset="cifar10")
