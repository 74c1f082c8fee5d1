"""The full Jacobian of a row-wise batched map (docs/theory.md §9.3).

``J_f(x)[b, i, k] = d f(x)_b,i / d x_b,k`` for every row ``b`` of a batched map ``f``
(docs/theory.md §1.4), ``i`` and ``k`` the row-major flat indices of the output and input
shapes. Two routes, one implementation each:

- :func:`jacobian`: vectorised VJPs (``torch.func.jacrev``), falling back to sequential VJPs
  and then to forward-mode columns;
- :func:`jacobian_forward`: forward-mode columns ``J e_k``, ``chunk`` basis vectors per JVP
  call, with any JVP function of the signature of ``torch.func.jvp`` (``largemodel`` passes
  its math-attention JVP).

Both cost ``B n_out n_in`` memory: small ``n`` only. :func:`theory.coefficients.log_Lambda_f`
takes ``slogdet`` of either.
"""

from __future__ import annotations

import torch

from theory._maps import BatchedMap, JvpFn, _check_chunk, _check_x, _eval, _jvp

__all__ = ["jacobian", "jacobian_forward"]


def jacobian_forward(f: BatchedMap, x: torch.Tensor, jvp: JvpFn | None = None, chunk: int | None = 64) -> torch.Tensor:
    """Full Jacobian ``J_f(x)`` of every row from forward-mode columns, shape ``(B, n_out, n_in)``.

    Column ``k`` is ``J_f(x) e_k`` (docs/theory.md §9.1, §9.3). The basis vectors go ``chunk`` at a
    time (default 64; ``None``: all ``n_in`` at once): for a chunk of ``m`` of them one call of
    ``jvp`` (default ``torch.func.jvp``) on ``B m`` rows, the points repeated
    (``x.repeat_interleave(m)``) against the ``m`` basis vectors of each row. The result is the
    transpose of the stacked columns (a non-contiguous view), in the dtype of ``x``.

    Args:
        f: row-wise batched map (docs/theory.md §1.4).
        x: points, shape ``(B, *shape)``, finite.
        jvp: a function with the signature of ``torch.func.jvp``.
        chunk: basis vectors per JVP call (>= 1) or ``None``.

    Raises:
        ValueError: invalid ``x`` or ``chunk``, or ``f`` not returning a batch of the same size.
    """
    x = _check_x(x)
    chunk = _check_chunk("chunk", chunk)
    b, shape = x.shape[0], x.shape[1:]
    n = x[0].numel()
    step = n if chunk is None else chunk
    eye = torch.eye(n, dtype=x.dtype, device=x.device)
    cols = []
    for start in range(0, n, step):
        basis = eye[start : start + step]
        m = basis.shape[0]
        tangents = basis.unsqueeze(0).expand(b, m, n).reshape(b * m, *shape)
        _, jv = _jvp(f, x.repeat_interleave(m, dim=0), tangents, jvp)
        cols.append(jv.reshape(b, m, -1))
    return torch.cat(cols, dim=1).transpose(1, 2)  # (B, n_out, n_in): column k = J e_k


def jacobian(f: BatchedMap, x: torch.Tensor) -> torch.Tensor:
    """Full Jacobian ``J_f(x)`` of every row, flattened to shape ``(B, n_out, n_in)``.

    ``J_f(x)[b, i, k] = d f(x)_b,i / d x_b,k`` with ``i``, ``k`` the row-major flat indices
    of ``shape_out`` and ``shape``. Because the map is row-wise, the Jacobian of
    ``x -> f(x).sum(0)`` (computed with ``torch.func.jacrev``, ``n_out`` vectorised VJPs)
    holds every row's Jacobian at once. If ``f`` cannot be vectorised by ``torch.vmap``
    (data-dependent control flow, ``.item()``), it falls back to ``n_out`` sequential VJPs.
    If ``f`` does not support reverse mode either (e.g. it updates tensors in place), it
    uses ``n_in`` forward-mode JVPs (:func:`jacobian_forward`, one basis vector per call).
    Memory and time grow like ``B * n_out * n_in``: meant for small ``n``.

    Args:
        f: row-wise batched map (docs/theory.md §1.4).
        x: points, shape ``(B, *shape)``, finite.

    Returns:
        Tensor of shape ``(B, n_out, n_in)`` in the dtype of ``x`` (contiguous).
    """
    x = _check_x(x)
    B = x.shape[0]
    n_in = x[0].numel()
    y = _eval(f, x)
    n_out = y[0].numel()
    try:
        jac = torch.func.jacrev(lambda z: f(z).sum(0))(x)  # (*shape_out, B, *shape)
        return jac.detach().reshape(n_out, B, n_in).permute(1, 0, 2).contiguous()
    except RuntimeError:  # not vmappable: one VJP per output coordinate instead
        pass
    jac = torch.empty((B, n_out, n_in), dtype=x.dtype, device=x.device)
    try:
        y, vjp_fn = torch.func.vjp(f, x)
        cot = torch.zeros((B, n_out), dtype=y.dtype, device=y.device)
        for i in range(n_out):
            cot.zero_()
            cot[:, i] = 1
            (g,) = vjp_fn(cot.reshape(y.shape))
            jac[:, i, :] = g.detach().reshape(B, n_in)
        return jac
    except RuntimeError:  # no reverse mode (e.g. in-place updates): one JVP per input coordinate
        pass
    return jacobian_forward(f, x, chunk=1).contiguous()
