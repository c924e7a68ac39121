"""The parameter transform in its sparse form.

Joint parameters are a linear map of the model parameters,
``joint_parameters[r] = sum_e values[e] * model_parameters[columns[e]]`` over
the entries ``e`` with ``rows[e] = r``. A character stores only those entries
(``index [2, nnz]`` = rows and columns, ``values [nnz]``), so its memory grows
with the number of joints, not with its square: a 5,000-joint skeleton with
one model parameter per joint parameter has 35,000 entries where the dense
``[7J, P]`` matrix would have 1.2 billion. Entries with the same row and column
add up (as in ``torch.sparse_coo_tensor``). (A Character also keeps a dense
copy of a transform of at most 65,536 elements, where one matmul is faster.)
"""

from __future__ import annotations

from typing import List, Tuple

import torch

from . import _checks


def entries(transform: torch.Tensor, joints: int, where: str) -> Tuple[torch.Tensor, torch.Tensor]:
    """``(index [2, nnz] int64 on the CPU, values [nnz])`` of a dense ``[7J, P]``
    tensor (its nonzero entries) or of a sparse COO/CSR/CSC one, checked:
    shape, finite values, indices in range."""
    if not isinstance(transform, torch.Tensor):
        raise ValueError(f"{where}: parameter_transform must be a tensor (dense or sparse), got "
                         f"{type(transform).__name__}")
    if transform.dim() != 2 or transform.shape[0] != 7 * joints:
        raise ValueError(f"{where}: parameter_transform must have shape [{7 * joints}, P] (7 rows per joint), "
                         f"got {list(transform.shape)}")
    if not transform.dtype.is_floating_point:
        raise ValueError(f"{where}: parameter_transform must be floating point, got {transform.dtype}")
    if transform.layout == torch.strided:
        if not bool(torch.isfinite(transform).all()):
            raise ValueError(f"{where}: parameter_transform has NaN or infinite values")
        index = torch.nonzero(transform).t().contiguous()
        values = transform[index[0], index[1]]
        return index.to("cpu", torch.int64), values
    if transform.layout in (torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc):
        transform = transform.to_sparse_coo()
    if transform.layout != torch.sparse_coo:
        raise ValueError(f"{where}: parameter_transform has layout {transform.layout}; give a dense tensor or a "
                         "sparse COO/CSR/CSC one")
    transform = transform.coalesce()
    index, values = transform.indices(), transform.values()
    if values.dim() != 1:
        raise ValueError(f"{where}: parameter_transform must be a 2-D sparse tensor without dense dimensions")
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"{where}: parameter_transform has NaN or infinite values")
    index = index.to("cpu", torch.int64)
    if index.numel() and (int(index.min()) < 0 or int(index[0].max()) >= transform.shape[0]
                          or int(index[1].max()) >= transform.shape[1]):
        raise ValueError(f"{where}: parameter_transform has indices outside its shape {list(transform.shape)}")
    return index, values


def identity(joints: int, dtype: torch.dtype, device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Every joint parameter its own model parameter (``P = 7J``)."""
    rows = torch.arange(7 * joints, dtype=torch.int64)
    return torch.stack([rows, rows]), torch.ones(7 * joints, dtype=dtype, device=device)


def apply(model_parameters: torch.Tensor, index: torch.Tensor, values: torch.Tensor, joint_rows: int) -> torch.Tensor:
    """``[..., P]`` -> ``[..., joint_rows]``: the sparse product, as a gather,
    a product and a scatter-add (differentiable in both the parameters and
    the values; ``index`` must be on the parameters' device)."""
    contributions = model_parameters.index_select(-1, index[1]) * values
    shape: List[int] = list(model_parameters.shape[:-1]) + [joint_rows]
    joint_parameters = torch.zeros(shape, dtype=contributions.dtype, device=contributions.device)
    return joint_parameters.index_add(-1, index[0], contributions)


def dense(index: torch.Tensor, values: torch.Tensor, joint_rows: int, parameters: int, where: str) -> torch.Tensor:
    """The dense ``[joint_rows, P]`` matrix, refused when it would take more
    than half of this machine's memory."""
    _checks.memory_budget(joint_rows * parameters * values.element_size(),
                          f"a dense parameter transform [{joint_rows}, {parameters}]", where)
    matrix = torch.zeros(joint_rows, parameters, dtype=values.dtype, device=values.device)
    return matrix.index_put_((index[0].to(values.device), index[1].to(values.device)), values, accumulate=True)
