"""`--data cifar100`: the CIFAR loader (`adkit.data.cifar`) fixed to CIFAR-100."""

from __future__ import annotations

from functools import partial

from . import cifar

records = partial(cifar.records, dataset="cifar100")
check = partial(cifar.check, dataset="cifar100")
