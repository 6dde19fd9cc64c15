"""Pure loss functions; each docstring gives the paper's equation.

Losses are written for the global batch: under a sharded `jax.jit`, reductions over the batch
axis span every device, so no explicit collectives are needed.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
  """x / max(||x||, eps), computed in at least float32."""
  x = x.astype(jnp.promote_types(x.dtype, jnp.float32))
  return x * jax.lax.rsqrt(jnp.maximum(jnp.sum(x * x, axis=axis, keepdims=True), eps * eps))


def normalized_regression(prediction: jax.Array, target: jax.Array) -> jax.Array:
  """BYOL's per-example loss: ||norm(p) - norm(z)||^2 = 2 - 2 cos(p, z).

  Returns [B]. The caller decides where gradients stop (see `byol_loss`).
  """
  return jnp.sum((l2_normalize(prediction) - l2_normalize(target)) ** 2, axis=-1)


def byol_loss(online_predictions: tuple[jax.Array, jax.Array], target_projections: tuple[jax.Array, jax.Array]) -> jax.Array:
  """BYOL's symmetrised loss (Grill et al. 2020, eq. 2 and the L + L~ sum).

  L = mean_b [ 2 - 2 cos(q(v), sg(z'(v'))) ] + mean_b [ 2 - 2 cos(q(v'), sg(z'(v))) ]

  Args:
    online_predictions: (q1, q2), the online predictor outputs for views 1 and 2, each [B, D].
    target_projections: (z1, z2), the target projector outputs for views 1 and 2, each [B, D].
  Returns:
    A scalar in [0, 8].
  """
  q1, q2 = online_predictions
  # The target only ever receives gradients through the EMA, never through the loss; the
  # stop_gradient is implied by differentiating online parameters only, and kept to show intent.
  z1, z2 = (jax.lax.stop_gradient(z) for z in target_projections)
  return jnp.mean(normalized_regression(q1, z2)) + jnp.mean(normalized_regression(q2, z1))


def softmax_cross_entropy(logits: jax.Array, labels: jax.Array, valid: jax.Array | None = None) -> jax.Array:
  """Mean cross-entropy over examples with `valid` True (labels < 0 mark unlabelled data)."""
  if valid is None:
    valid = labels >= 0
  log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))
  picked = jnp.take_along_axis(log_probs, jnp.maximum(labels, 0)[:, None], axis=-1)[:, 0]
  weight = valid.astype(jnp.float32)
  return -jnp.sum(picked * weight) / jnp.maximum(jnp.sum(weight), 1.0)


def brave_loss(
    narrow: tuple[jax.Array, jax.Array], broad: tuple[tuple[jax.Array, jax.Array], ...]
) -> jax.Array:
  """BraVe's symmetric regression between a narrow view and K broad views (Recasens et al. 2021, eq. 2-3).

  L = sum_k mean_b ||norm(h(g(f_n))) - sg(norm(g(f_b^k)))||^2 + ||norm(h(g(f_b^k))) - sg(norm(g(f_n)))||^2

  There is no target network: the stop-gradient falls on the projections of the SAME (online)
  networks, which is what makes it BraVe rather than BYOL.

  Args:
    narrow: (prediction h(g(f_n)), projection g(f_n)) of the narrow view, each [B, D].
    broad: one (prediction, projection) pair per broad view.
  Returns:
    A scalar in [0, 8K].
  """
  if not broad:
    raise ValueError("BraVe needs at least one broad view; add one to config.brave.broad_views.")
  narrow_prediction, narrow_projection = narrow
  total = 0.0
  for broad_prediction, broad_projection in broad:
    total += jnp.mean(normalized_regression(narrow_prediction, jax.lax.stop_gradient(broad_projection)))
    total += jnp.mean(normalized_regression(broad_prediction, jax.lax.stop_gradient(narrow_projection)))
  return total


def masked_info_nce(similarity: jax.Array, positive: jax.Array, compared: jax.Array, temperature: float) -> jax.Array:
  """A noise-contrastive loss over every pair of M samples, chosen by two masks (GDT, Patrick et al. 2021, eq. 3).

  With s = similarity / temperature, P = positive & compared and N = compared & ~positive:

    L = mean over (i, j) in P of  -log( exp(s_ij) / (exp(s_ij) + sum_{k: (i, k) in N} exp(s_ik)) )

  Each positive pair competes only with the row's negatives, not with the row's other
  positives: this is the official GDT code's loss, where every cross-entropy has one positive
  and a set of negatives. With one positive per row it is InfoNCE / NT-Xent.

  Args:
    similarity: [M, M] similarities (cosines of L2-normalised embeddings).
    positive: [M, M] bool, c(T, T'): the pair should be close.
    compared: [M, M] bool, w(T, T') = 1: the pair enters the loss at all.
    temperature: the softmax temperature (GDT: 0.07).
  Returns:
    A scalar; 0 when there is no positive pair.
  """
  logits = _at_least_float32(similarity) / temperature
  positive = positive & compared
  negative = compared & ~positive
  # A finite stand-in for -inf keeps the gradient of rows without negatives finite.
  negative_logsumexp = jax.nn.logsumexp(jnp.where(negative, logits, -1e9), axis=-1, keepdims=True)
  per_pair = jnp.logaddexp(logits, negative_logsumexp) - logits
  count = jnp.sum(positive)
  return jnp.sum(jnp.where(positive, per_pair, 0.0)) / jnp.maximum(count, 1)


def _at_least_float32(x: jax.Array) -> jax.Array:
  return x.astype(jnp.promote_types(x.dtype, jnp.float32))


def negative_cosine_similarity(predictions: tuple[jax.Array, jax.Array], projections: tuple[jax.Array, jax.Array]) -> jax.Array:
  """SimSiam's symmetrised loss (Chen & He 2021, eqs. 1-4).

  L = D(p1, sg(z2)) / 2 + D(p2, sg(z1)) / 2,  D(p, z) = -mean_b cos(p_b, z_b)

  Unlike BYOL the projections z come from the very network being trained, so the stop-gradient
  here is what prevents collapse (the paper's table 1), not a statement of intent.

  Args:
    predictions: (p1, p2), the predictor outputs for views 1 and 2, each [B, D].
    projections: (z1, z2), the projector outputs for views 1 and 2, each [B, D].
  Returns:
    A scalar in [-1, 1].
  """
  p1, p2 = predictions
  z1, z2 = (jax.lax.stop_gradient(z) for z in projections)
  cosine = lambda p, z: jnp.sum(l2_normalize(p) * l2_normalize(z), axis=-1)
  return -0.5 * (jnp.mean(cosine(p1, z2)) + jnp.mean(cosine(p2, z1)))


def multicrop_negative_cosine_similarity(predictions, projections, num_targets: int = 2) -> jax.Array:
  """SimSiam's loss over multi-crop views: every crop predicts every other global crop.

  L = mean over pairs (i, j), j < num_targets, i != j, of D(p_i, sg(z_j)), with D as in
  `negative_cosine_similarity`, which this equals for two crops. Targets come from the global
  crops only, as in SwAV's and DINO's multi-crop, since a small local crop often misses what
  the image shows.

  Args:
    predictions: one [B, D] predictor output per crop, the global crops first.
    projections: the matching projector outputs; only the first `num_targets` are used.
    num_targets: how many leading crops are global (targets).
  Returns:
    A scalar in [-1, 1].
  """
  cosine = lambda p, z: jnp.mean(jnp.sum(l2_normalize(p) * l2_normalize(z), axis=-1))
  terms = [
      cosine(p, jax.lax.stop_gradient(projections[j]))
      for j in range(num_targets)
      for i, p in enumerate(predictions)
      if i != j
  ]
  return -sum(terms) / len(terms)


def direct_predictor(correlation: jax.Array, eps: float = 0.01) -> jax.Array:
  """DirectPred's linear predictor (Tian, Chen & Ganguli 2021, eq. 18): W_p = U diag(p) U^T.

  With `correlation` = U diag(s) U^T (the running E[z z^T] of the projections), p_j =
  sqrt(s_j / max s) + eps. Directions in which the projections vary strongly are predicted
  almost as they are (p near 1) and stop growing, while weak ones, boosted by `eps`, keep
  being amplified: the paper's remedy for the dimensional collapse a learned predictor drifts
  into. The result is a constant for the gradient.

  Args:
    correlation: [D, D], symmetric positive semi-definite.
    eps: the boost of every eigenvalue (the paper's sample command: 0.01).
  Returns:
    [D, D] symmetric; a prediction is `z @ W`.
  """
  correlation = jax.lax.stop_gradient(_at_least_float32(correlation))
  eigenvalues, eigenvectors = jnp.linalg.eigh(correlation)
  eigenvalues = jnp.maximum(eigenvalues, 0.0)  # round-off can leave tiny negative ones
  scale = jnp.sqrt(eigenvalues / jnp.maximum(jnp.max(eigenvalues), 1e-12)) + eps
  return (eigenvectors * scale) @ eigenvectors.T


def running_direct_predictor(
    correlation: jax.Array, projections: Sequence[jax.Array], rho: float, eps: float
) -> tuple[jax.Array, jax.Array]:
  """DirectPred's predictor from a running correlation (Tian, Chen & Ganguli 2021, eq. 19, 18).

  F <- rho F + (1 - rho) E[z z^T] over all rows of `projections` (the global batch of every
  view given), then W_p = `direct_predictor(F, eps)`. Both are constants for the gradient.

  Returns:
    (W_p, the new F); a prediction is `z @ W_p`.
  """
  z = jax.lax.stop_gradient(jnp.concatenate(projections).astype(jnp.float32))
  correlation = rho * correlation + (1 - rho) * (z.T @ z) / z.shape[0]
  return direct_predictor(correlation, eps), correlation


def batch_standardize(z: jax.Array, eps: float = 1e-5) -> jax.Array:
  """(z - mean_b z) / sqrt(var_b z + eps) per dimension: a BatchNorm without scale and offset.

  The variance is the biased one (divided by B), as BatchNorm computes it.
  """
  z = _at_least_float32(z)
  centred = z - jnp.mean(z, axis=0)
  return centred * jax.lax.rsqrt(jnp.mean(centred * centred, axis=0) + eps)


def cross_correlation(z1: jax.Array, z2: jax.Array, eps: float = 1e-5) -> jax.Array:
  """Barlow Twins' C_ij = sum_b bs(z1)_bi bs(z2)_bj / B over the global batch, [D, D]."""
  return batch_standardize(z1, eps).T @ batch_standardize(z2, eps) / z1.shape[0]


def barlow_twins_terms(z1: jax.Array, z2: jax.Array, eps: float = 1e-5) -> tuple[jax.Array, jax.Array]:
  """(invariance, redundancy) = (sum_i (1 - C_ii)^2, sum_{i != j} C_ij^2) of `cross_correlation`."""
  c = cross_correlation(z1, z2, eps)
  diagonal = jnp.diagonal(c)
  invariance = jnp.sum((1.0 - diagonal) ** 2)
  redundancy = jnp.sum(c * c) - jnp.sum(diagonal * diagonal)
  return invariance, redundancy


def barlow_twins_loss(z1: jax.Array, z2: jax.Array, redundancy_weight: float = 5e-3, eps: float = 1e-5) -> jax.Array:
  """Barlow Twins (Zbontar et al. 2021, eq. 1): sum_i (1 - C_ii)^2 + lambda sum_{i != j} C_ij^2.

  Args:
    z1, z2: projector outputs for the two views, each [B, D], B the global batch.
    redundancy_weight: lambda, 5e-3 in the paper.
    eps: added to the variance when standardising each dimension over the batch.
  """
  invariance, redundancy = barlow_twins_terms(z1, z2, eps)
  return invariance + redundancy_weight * redundancy


def _off_diagonal_squares_per_dimension(z: jax.Array) -> jax.Array:
  """VICReg's c(Z) = sum_{i != j} Cov(Z)_ij^2 / D with the unbiased covariance over the batch."""
  batch, dim = z.shape
  centred = z - jnp.mean(z, axis=0)
  covariance = centred.T @ centred / (batch - 1)
  return (jnp.sum(covariance * covariance) - jnp.sum(jnp.diagonal(covariance) ** 2)) / dim


def _std_hinge(z: jax.Array, target_std: float, eps: float) -> jax.Array:
  """VICReg's v(Z) = mean_j max(0, gamma - sqrt(Var(z_j) + eps)), unbiased variance."""
  std = jnp.sqrt(jnp.var(z, axis=0, ddof=1) + eps)
  return jnp.mean(jax.nn.relu(target_std - std))


def vicreg_terms(z1: jax.Array, z2: jax.Array, target_std: float = 1.0, eps: float = 1e-4) -> tuple[jax.Array, jax.Array, jax.Array]:
  """VICReg's (invariance, variance, covariance) terms (Bardes et al. 2022, eqs. 1-5).

  invariance  s = mean_{b,j} (z1_bj - z2_bj)^2
  variance    v = [v(Z1) + v(Z2)] / 2,  v(Z) = mean_j max(0, gamma - sqrt(Var_b(z_j) + eps))
  covariance  c = c(Z1) + c(Z2),        c(Z) = sum_{i != j} Cov_b(Z)_ij^2 / D

  These follow the official code, with which the 25/25/1 weights were tuned: the paper's eq. 6
  writes s as a sum over dimensions (D times larger) and v(Z) + v(Z') without the 1/2.
  Variance and covariance span the global batch, as the official code's all-gather does.
  """
  z1, z2 = _at_least_float32(z1), _at_least_float32(z2)
  invariance = jnp.mean((z1 - z2) ** 2)
  variance = 0.5 * (_std_hinge(z1, target_std, eps) + _std_hinge(z2, target_std, eps))
  covariance = _off_diagonal_squares_per_dimension(z1) + _off_diagonal_squares_per_dimension(z2)
  return invariance, variance, covariance


def vicreg_loss(
    z1: jax.Array,
    z2: jax.Array,
    *,
    invariance_weight: float = 25.0,
    variance_weight: float = 25.0,
    covariance_weight: float = 1.0,
    target_std: float = 1.0,
    eps: float = 1e-4,
) -> jax.Array:
  """VICReg: lambda s + mu v + nu c with (lambda, mu, nu) = (25, 25, 1); see `vicreg_terms`."""
  invariance, variance, covariance = vicreg_terms(z1, z2, target_std, eps)
  return invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance


def sinkhorn_knopp(scores: jax.Array, epsilon: float = 0.05, num_iterations: int = 3) -> jax.Array:
  """SwAV's equipartitioned soft codes (Caron et al. 2020, sec. 3.1 and eq. 3).

  Q* = Diag(u) exp(C^T Z / epsilon) Diag(v): the transport plan closest to the scores whose
  prototypes each receive 1/K of the batch's mass and whose examples each carry 1/B. As in the
  paper, a few alternating row / column normalisations approximate it, over the GLOBAL batch
  (under a sharded jit the sums over the batch axis span every device).

  The iterations run in float32 in the log domain: logsumexp subtracts the maximum before `exp`,
  so scores / epsilon of e^20 and more neither overflow (the fp16 failure the reference guards
  against by hand) nor underflow to a prototype with zero mass.

  Args:
    scores: [B, K] prototype scores (cosine similarities), any float dtype.
    epsilon: entropic regularisation (paper: 0.05).
    num_iterations: normalisation rounds (paper: 3).
  Returns:
    float32 [B, K] codes; each row sums to 1 (an assignment of example b over prototypes),
    each column sums to about B / K.
  """
  batch, num_prototypes = scores.shape
  log_q = scores.astype(jnp.float32) / epsilon
  log_q = log_q - jax.nn.logsumexp(log_q)  # total mass 1
  for _ in range(num_iterations):
    # Every prototype gets 1/K of the mass ...
    log_q = log_q - jax.nn.logsumexp(log_q, axis=0, keepdims=True) - jnp.log(num_prototypes)
    # ... and every example 1/B (the last normalisation, so codes are exact distributions).
    log_q = log_q - jax.nn.logsumexp(log_q, axis=1, keepdims=True) - jnp.log(batch)
  return jnp.exp(log_q + jnp.log(batch))


def swapped_cross_entropy(targets: jax.Array, logits: jax.Array, temperature: float) -> jax.Array:
  """Mean over crop pairs (i, v), v != i, of -mean_b sum_k targets[i, b, k] log softmax(logits[v, b] / T)_k.

  The cross-view prediction shared by SwAV (eq. 1: predict crop i's code from crop v) and DINO
  (eq. 3: the student on crop v matches the teacher on global crop i). Targets exist for the
  first G crops (the global ones); logits for all C crops; the pairs of a crop with itself are
  left out, so each target is predicted from the C - 1 other crops.

  Args:
    targets: [G, B, K] probability vectors (stop-gradient is the caller's choice).
    logits: [C, B, K] with C >= G; crops 0..G-1 are the ones the targets were computed from.
    temperature: softmax temperature of the prediction (SwAV 0.1, DINO student 0.1).
  Returns:
    A scalar.
  """
  num_targets, num_crops = targets.shape[0], logits.shape[0]
  if num_crops < 2 or num_targets > num_crops:
    raise ValueError(f"Need at least 2 crops and no more target crops than crops; got {num_targets} targets for {num_crops} crops.")
  log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)) / temperature, axis=-1)
  # cross[i, v] = mean_b sum_k -targets[i, b, k] log_probs[v, b, k]
  cross = -jnp.einsum("gbk,cbk->gc", targets.astype(log_probs.dtype), log_probs) / targets.shape[1]
  pairs = 1.0 - jnp.eye(num_targets, num_crops, dtype=cross.dtype)  # drop (i, i)
  return jnp.sum(cross * pairs) / jnp.sum(pairs)


def swav_loss(logits: jax.Array, codes: jax.Array, temperature: float = 0.1) -> jax.Array:
  """SwAV's swapped prediction (Caron et al. 2020, eq. 1-2, averaged over pairs as in the code).

  L = mean_{i in global crops} mean_{v != i} l(z_v, q_i),  l(z, q) = -sum_k q_k log softmax(z^T c / T)_k

  Args:
    logits: [C, B, K] prototype scores z_v^T c_k of every crop, global crops first.
    codes: [G, B, K] Sinkhorn codes of the G global crops; no gradient flows into them.
    temperature: T (paper: 0.1).
  """
  return swapped_cross_entropy(jax.lax.stop_gradient(codes), logits, temperature)


def dino_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    center: jax.Array,
    student_temperature: float = 0.1,
    teacher_temperature: float | jax.Array = 0.04,
) -> jax.Array:
  """DINO's loss (Caron et al. 2021, eq. 3 and algorithm 1).

  L = mean_{i in global crops} mean_{v != i} H(P_t(x_i), P_s(x_v)),
  P_t = softmax(sg(g_t(x) - centre) / T_t),  P_s = softmax(g_s(x) / T_s),  H(a, b) = -sum a log b.

  Args:
    student_logits: [C, B, K] student outputs of every crop, global crops first.
    teacher_logits: [G, B, K] teacher outputs of the G global crops.
    center: [K] the running mean of teacher outputs.
    student_temperature: T_s (paper: 0.1).
    teacher_temperature: T_t (paper: 0.04 warmed up to 0.07).
  """
  return swapped_cross_entropy(dino_teacher_probs(teacher_logits, center, teacher_temperature), student_logits, student_temperature)


def dino_teacher_probs(
    teacher_logits: jax.Array,
    center: jax.Array,
    temperature: float | jax.Array,
    centering: str = "centre",
    sinkhorn_iterations: int = 3,
) -> jax.Array:
  """The teacher's targets P_t [G, B, K] from its logits [G, B, K], gradient stopped.

  centering="centre": DINO's softmax((g_t(x) - c) / T_t), c the running mean of teacher outputs.
  centering="sinkhorn": DINOv2's replacement (Oquab et al. 2023, sec. 4): SwAV's Sinkhorn-Knopp
    over all global crops of the global batch with epsilon = T_t and no centre, so every output
    dimension gets an equal share of the batch however alike the teacher's outputs are.
  """
  teacher = jax.lax.stop_gradient(teacher_logits.astype(jnp.promote_types(teacher_logits.dtype, jnp.float32)))
  if centering == "centre":
    return jax.nn.softmax((teacher - center) / temperature, axis=-1)
  if centering == "sinkhorn":
    codes = sinkhorn_knopp(teacher.reshape(-1, teacher.shape[-1]), temperature, sinkhorn_iterations)
    return codes.reshape(teacher.shape)
  raise ValueError(f"Unknown DINO teacher centering '{centering}'; use 'centre' (DINO) or 'sinkhorn' (DINOv2).")


def info_nce(
    queries: jax.Array, positive_keys: jax.Array, negative_keys: jax.Array, temperature: float, negative_weights: jax.Array | None = None
) -> jax.Array:
  """MoCo's contrastive loss against a shared set of negatives (He et al. 2020, eq. 1).

  L_q = -log [ exp(q.k+ / tau) / (exp(q.k+ / tau) + sum_{k-} exp(w_k- q.k- / tau)) ], averaged over q.

  Args:
    queries: q [B, D], L2-normalised.
    positive_keys: k+ [B, D], L2-normalised; row b is the positive of query b.
    negative_keys: k- [K, D], L2-normalised (the queue, or memory-bank samples).
    temperature: tau (0.07 in MoCo v1, 0.2 in v2).
    negative_weights: w [K] scaling each negative's similarity before the temperature
      (VideoMoCo's temporal decay t^age); all 1 when None.
  Returns:
    A scalar: cross-entropy of (K+1)-way classification with the positive as class 0.
  """
  positive = jnp.sum(queries * positive_keys, axis=-1, keepdims=True)
  negative = queries @ negative_keys.T
  if negative_weights is not None:
    negative = negative * negative_weights.astype(negative.dtype)
  logits = jnp.concatenate([positive, negative], axis=-1) / temperature
  return -jnp.mean(jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))[:, 0])


def in_batch_info_nce(queries: jax.Array, keys: jax.Array, temperature: float) -> jax.Array:
  """InfoNCE with the current batch as the dictionary (MoCo's "end-to-end" baseline, fig. 2a).

  L = mean_i -log [ exp(q_i.k_i / tau) / sum_j exp(q_i.k_j / tau) ]; the B-1 other keys of the
  (global) batch are the negatives. Inputs [B, D], L2-normalised.
  """
  logits = (queries @ keys.T) / temperature
  log_probs = jax.nn.log_softmax(logits.astype(jnp.promote_types(logits.dtype, jnp.float32)))
  return -jnp.mean(jnp.diagonal(log_probs))


def nce_loss(
    positive_similarity: jax.Array,
    negative_similarity: jax.Array,
    temperature: float,
    log_normalizer: jax.Array,
    num_examples: int,
) -> jax.Array:
  """NPID's noise-contrastive estimation loss (Wu et al. 2018, eqs. 4-7).

  P(i|v) = exp(v_i.v / tau) / Z, with the normalising constant Z estimated once and then fixed.
  With m noise samples from the uniform P_n = 1/N, h(i, v) = P(i|v) / (P(i|v) + m P_n) and

    J = -mean_b [ log h(i_b, v_b) + sum_{j in noise} log(1 - h(j, v_b)) ].

  Args:
    positive_similarity: v_i.f_i [B], each feature against its own memory-bank entry.
    negative_similarity: v_j.f_i [B, m], against the m noise samples.
    temperature: tau (0.07).
    log_normalizer: log Z.
    num_examples: N, the number of training examples (the memory bank's size).
  """
  num_noise = negative_similarity.shape[-1]
  log_noise = jnp.log(num_noise / num_examples)  # log(m P_n)
  log_p_positive = positive_similarity / temperature - log_normalizer
  log_p_negative = negative_similarity / temperature - log_normalizer
  log_h_positive = log_p_positive - jnp.logaddexp(log_p_positive, log_noise)
  log_one_minus_h_negative = log_noise - jnp.logaddexp(log_p_negative, log_noise)
  return -jnp.mean(log_h_positive + jnp.sum(log_one_minus_h_negative, axis=-1))
def nt_xent_loss(z1: jax.Array, z2: jax.Array, temperature: float) -> jax.Array:
  """SimCLR's NT-Xent loss over the global batch (Chen et al. 2020, eq. 1 and algorithm 1).

  With u = norm(concat(z1, z2)) [2B, D] and s_ij = u_i . u_j / temperature, each of the 2B views
  has its other view as the positive and the 2B - 2 other views of the batch as negatives:

    L = 1 / 2B sum_i -log( exp(s_i,pos(i)) / sum_{j != i} exp(s_ij) ),  pos(i) = i +- B.

  Under a sharded `jax.jit` the 2B x 2B similarity matrix spans every device, so negatives are
  global without an explicit all-gather.

  Args:
    z1: projections of the first views [B, D].
    z2: projections of the second views [B, D].
    temperature: the softmax temperature tau.
  Returns:
    A scalar.
  """
  u = l2_normalize(jnp.concatenate([z1, z2], axis=0))
  batch = z1.shape[0]
  logits = u @ u.T / temperature
  # A view is never its own negative: its self-similarity is removed from the softmax.
  logits = jnp.where(jnp.eye(2 * batch, dtype=bool), -jnp.inf, logits)
  positives = jnp.concatenate([jnp.arange(batch, 2 * batch), jnp.arange(batch)])
  return softmax_cross_entropy(logits, positives)


def info_nce_loss(queries: jax.Array, keys: jax.Array, temperature: float) -> jax.Array:
  """InfoNCE with the batch as the dictionary: query i's positive is key i, the other keys are
  negatives (MoCo v3, Chen, Xie, He 2021, algorithm 1 `ctr`).

    L = mean_i -log( exp(q_i . k_i / tau) / sum_j exp(q_i . k_j / tau) ) * 2 tau,

  with q and k L2-normalised. The 2 tau factor (from the official code) makes the gradient's
  scale independent of tau. Keys come from the momentum encoder and get no gradient.
  """
  keys = l2_normalize(jax.lax.stop_gradient(keys))
  return in_batch_info_nce(l2_normalize(queries), keys, temperature) * (2.0 * temperature)


def moco_v3_loss(
    queries: tuple[jax.Array, jax.Array], keys: tuple[jax.Array, jax.Array], temperature: float
) -> jax.Array:
  """MoCo v3's symmetrised loss: ctr(q1, k2) + ctr(q2, k1) (Chen, Xie, He 2021, algorithm 1).

  Args:
    queries: (q1, q2), online predictor outputs for views 1 and 2, each [B, D].
    keys: (k1, k2), momentum-encoder projections for views 1 and 2, each [B, D].
    temperature: tau (0.2 for ViT, 1.0 for ResNet-50 in the paper).
  """
  q1, q2 = queries
  k1, k2 = keys
  return info_nce_loss(q1, k2, temperature) + info_nce_loss(q2, k1, temperature)
