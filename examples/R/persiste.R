# persiste from R: log-likelihood, exact gradient and maximum-likelihood
# fit of gene gain and loss rates on a phylogeny (see README.md here).
#
#   source("persiste.R"); persiste_load("persiste_r.so")
#
# Every call goes through the stateless .C shims of persiste_r.c: the tree
# and the table are read again on each call (milliseconds), nothing is kept
# between calls, so nothing can leak.

persiste_load <- function(so = "persiste_r.so") {
  dyn.load(normalizePath(so))
  invisible(so)
}

.persiste_conditions <- c(none = 0L, present = 1L, variable = 2L)

# The input arguments shared by every shim, in persiste_r.c's order.
#   tree: Newick text, a Newick file, or an ape "phylo" object.
#   pam:  0/1 matrix, families in rows and genomes in columns named as the
#         tree tips (NA = unknown); or the path of a Roary/Panaroo .Rtab
#         (or CSV/TSV, gzip allowed), which the C reader parses.
#   drop_extra_taxa: drop genomes the tree lacks (default: an error).
#   missing_as_unknown: tree tips the table lacks are unknown in every
#         family (default: an error).
#   drop_absent: drop families absent from every kept genome; a pangenome
#         never lists such a family, and under conditioning it would be
#         counted as impossible.
.persiste_inputs <- function(tree, pam, drop_extra_taxa, drop_absent,
                             missing_as_unknown) {
  # 17 significant digits give back every branch length exactly (ape's
  # default, 10, rounds them)
  if (inherits(tree, "phylo")) tree <- ape::write.tree(tree, digits = 17)
  if (!is.character(tree) || length(tree) != 1L)
    stop("tree: Newick text, a file path or an ape phylo object",
         call. = FALSE)
  # Newick text ends with ';', a path does not.
  tree_is_file <- !grepl(";\\s*$", tree)
  if (tree_is_file) tree <- path.expand(tree)
  flags <- if (drop_extra_taxa) 1L else 0L
  if (missing_as_unknown) flags <- flags + 2L
  if (drop_absent) flags <- flags + 4L
  if (is.character(pam) && length(pam) == 1L) {
    return(list(tree, as.integer(tree_is_file), path.expand(pam), 0L,
                c(0L, 0L), "", flags))
  }
  pam <- as.matrix(pam)
  if (is.null(colnames(pam)))
    stop("pam: the columns must be named after the genomes (tree tips)",
         call. = FALSE)
  states <- pam
  storage.mode(states) <- "integer"
  if (any(!is.na(states) & (states != pam | !(states %in% 0:1))))
    stop("pam: cells must be 0 (absent), 1 (present) or NA (unknown)",
         call. = FALSE)
  states[is.na(states)] <- 2L  # PERSISTE_UNKNOWN
  list(tree, as.integer(tree_is_file), "", states, dim(states),
       colnames(pam), flags)
}

# The C flags that the library's messages suggest, as R arguments.
.persiste_flag_names <- c(
  PERSISTE_DATA_DROP_EXTRA_TAXA = "drop_extra_taxa = TRUE",
  PERSISTE_DATA_MISSING_AS_UNKNOWN = "missing_as_unknown = TRUE",
  PERSISTE_CONDITION_PRESENT = "condition = \"present\"")

# Calls a shim; an error status becomes an R error carrying the library's
# message (file, line, column, genome names ...). tips: the tree's tip
# names, to name the genome of a per-genome error pair the library rejects
# by its tip index.
.persiste_call <- function(name, args, ..., tips = NULL) {
  r <- do.call(.C, c(list(name), unname(args), list(...),
                     list(status = 0L, msg = strrep(" ", 511L),
                          PACKAGE = "persiste_r")))
  if (r$status != 0L) {
    msg <- trimws(r$msg)
    for (flag in names(.persiste_flag_names))
      msg <- gsub(flag, .persiste_flag_names[[flag]], msg, fixed = TRUE)
    pair <- regmatches(msg, regexec("error pair ([0-9]+)", msg))[[1]]
    if (length(pair) && !is.null(tips)) {
      i <- as.integer(pair[2]) + 1L
      if (i <= length(tips))
        msg <- sub(pair[1], sprintf("%s (genome %s)", pair[1], tips[i]), msg,
                   fixed = TRUE)
    }
    stop("persiste: ", msg, call. = FALSE)
  }
  r
}

## Model options ----------------------------------------------------------

# The tree in the library's node order (tips first, then internal nodes in
# post-order, the root last): parent (0-based, -1 for the root), branch
# lengths and labels.
.persiste_tree <- function(inputs) {
  shape <- function(room, width, n)
    .persiste_call("persiste_r_tree", inputs[1:2], room = as.integer(room),
                   sizes = integer(3), parent = integer(max(1L, n)),
                   branch_length = double(max(1L, n)),
                   labels = rep(strrep(" ", width), max(1L, n)))
  s <- shape(0L, 0L, 0L)$sizes
  r <- shape(s[1], s[3], s[1])
  list(n_nodes = s[1], n_tips = s[2], parent = r$parent,
       branch_length = r$branch_length, label = r$labels,
       tips = r$labels[seq_len(s[2])])
}

.persiste_number <- function(x, what) {
  if (!is.numeric(x) || length(x) != 1L || is.na(x))
    stop(what, ": one number", call. = FALSE)
  x
}

# error_absent, error_present: NULL (no error model), one number each (one
# pair for every genome) or vectors named by genome (one pair per tip in
# tip order; genomes not named get 0). The library checks the values.
.persiste_error <- function(error_absent, error_present, tree) {
  if (is.null(error_absent) && is.null(error_present)) return(NULL)
  if (is.null(error_absent)) error_absent <- 0
  if (is.null(error_present)) error_present <- 0
  both <- list(error_absent = error_absent, error_present = error_present)
  for (what in names(both)) {
    x <- both[[what]]
    if (!is.numeric(x) || length(x) == 0L || anyNA(x))
      stop(what, ": one number, or numbers named by genome (no NA)",
           call. = FALSE)
    if (is.null(names(x)) && length(x) != 1L)
      stop(what, ": one number for every genome, or a vector named by ",
           "genome", call. = FALSE)
  }
  if (is.null(names(error_absent)) && is.null(names(error_present)))
    return(list(absent = unname(error_absent),
                present = unname(error_present), tips = NULL))
  tips <- tree()$tips
  per_tip <- lapply(names(both), function(what) {
    x <- both[[what]]
    if (is.null(names(x))) return(rep(x, length(tips)))
    unknown <- setdiff(names(x), tips)
    if (length(unknown))
      stop(what, ": genome(s) not in the tree: ",
           paste(unknown, collapse = ", "), call. = FALSE)
    dup <- unique(names(x)[duplicated(names(x))])
    if (length(dup))
      stop(what, ": genome(s) named twice: ", paste(dup, collapse = ", "),
           call. = FALSE)
    v <- numeric(length(tips))
    v[match(names(x), tips)] <- unname(x)
    v
  })
  list(absent = per_tip[[1]], present = per_tip[[2]], tips = tips)
}

# Discretised gamma rates (mean 1) of the library: persiste_gamma_categories.
persiste_gamma_rates <- function(alpha, categories = 4L, median = FALSE) {
  alpha <- .persiste_number(alpha, "gamma_alpha")
  k <- .persiste_count(categories, "categories")
  .persiste_call("persiste_r_gamma", list(), alpha = as.double(alpha),
                 n_categories = k, median = as.integer(isTRUE(median)),
                 rates = double(max(1L, k)))$rates[seq_len(k)]
}

.persiste_count <- function(x, what) {
  if (!is.numeric(x) || length(x) != 1L || is.na(x) || x != round(x) ||
      abs(x) > .Machine$integer.max)
    stop(what, ": one whole number", call. = FALSE)
  as.integer(x)
}

# The node a lineage row names (0-based): a tip or internal label, or two
# tip names joined by a comma (their most recent common ancestor).
.persiste_clade_node <- function(tr, spec) {
  parts <- trimws(strsplit(spec, ",", fixed = TRUE)[[1]])
  if (length(parts) == 1L) {
    hits <- which(tr$label == parts)
    if (!nzchar(parts) || length(hits) == 0L)
      stop("lineage: node '", spec, "' is neither a tip nor an internal ",
           "label of the tree", call. = FALSE)
    if (length(hits) > 1L)
      stop("lineage: node label '", spec, "' names ", length(hits),
           " nodes of the tree", call. = FALSE)
    return(hits - 1L)
  }
  if (length(parts) != 2L)
    stop("lineage: node '", spec, "': give a label, or two tip names ",
         "joined by a comma", call. = FALSE)
  v <- match(parts, tr$tips) - 1L
  if (anyNA(v))
    stop("lineage: node '", spec, "': '", parts[is.na(v)][1],
         "' is not a tip of the tree", call. = FALSE)
  path <- integer(0)
  u <- v[1]
  while (u >= 0L) {
    path <- c(path, u)
    u <- tr$parent[u + 1L]
  }
  u <- v[2]
  while (!(u %in% path)) u <- tr$parent[u + 1L]
  u
}

# lineage: a data.frame or list with columns node, gain, loss. Each row's
# multipliers apply to the branch above its node and every branch below it;
# later rows override earlier ones where their clades meet. Returns the
# per-node multipliers and, for each node, the row that set it (0: none).
.persiste_lineage <- function(lineage, tree) {
  if (is.null(lineage)) return(NULL)
  if (!is.list(lineage) || !all(c("node", "gain", "loss") %in% names(lineage)))
    stop("lineage: a data.frame or list with columns node, gain, loss",
         call. = FALSE)
  node <- as.character(lineage$node)
  gain <- lineage$gain
  loss <- lineage$loss
  if (length(node) == 0L || length(gain) != length(node) ||
      length(loss) != length(node) || anyNA(node))
    stop("lineage: node, gain and loss must have one value per row",
         call. = FALSE)
  bad <- which(!is.numeric(gain) | !is.numeric(loss) | !is.finite(gain) |
                 !is.finite(loss) | gain <= 0 | loss <= 0)
  if (length(bad))
    stop("lineage: row ", bad[1], " (node '", node[bad[1]], "'): gain and ",
         "loss multipliers must be finite numbers > 0", call. = FALSE)
  tr <- tree()
  n <- tr$n_nodes
  g <- rep(1, n)
  l <- rep(1, n)
  row_of <- integer(n)
  for (j in seq_along(node)) {
    v <- .persiste_clade_node(tr, node[j])
    # parents come after their children: from the root down, a node is in
    # the clade when it is v or its parent is
    inside <- logical(n)
    for (u in n:1) {
      p <- tr$parent[u]
      inside[u] <- u - 1L == v || (p >= 0L && inside[p + 1L])
    }
    g[inside] <- gain[j]
    l[inside] <- loss[j]
    row_of[inside] <- j
  }
  list(gain = g, loss = l, row_of = row_of, rows = node)
}

# The model options, checked and resolved against the tree (read only when
# a per-genome error or a lineage needs it).
.persiste_model <- function(inputs, condition = "present", min_present = 1L,
                            error_absent = NULL, error_present = NULL,
                            gamma_alpha = NULL, categories = 4L,
                            gamma_median = FALSE, lineage = NULL,
                            drop_unobservable = FALSE) {
  tr <- NULL
  tree <- function() {
    if (is.null(tr)) tr <<- .persiste_tree(inputs)
    tr
  }
  condition <- match.arg(condition, names(.persiste_conditions))
  m <- list(condition = .persiste_conditions[[condition]],
            min_present = .persiste_count(min_present, "min_present"),
            error = .persiste_error(error_absent, error_present, tree),
            gamma = NULL,
            lineage = .persiste_lineage(lineage, tree),
            observable = as.integer(isTRUE(drop_unobservable)))
  if (!is.null(gamma_alpha)) {
    m$gamma <- list(alpha = .persiste_number(gamma_alpha, "gamma_alpha"),
                    k = .persiste_count(categories, "categories"),
                    median = isTRUE(gamma_median))
    m$gamma$rates <- .persiste_category_rates(m$gamma)
  }
  m
}

# The rates as category multipliers: at small alpha the lowest rates
# underflow to 0 (or come near it), which persiste_model_set_categories
# rejects (multipliers must be > 0) or where the library's derivatives
# turn NaN (a rate times the multiplier below DBL_MIN). They are raised to
# 1e-250, which keeps exp(-100) * 1e-250 normal; such a category's
# families practically never change either way.
.persiste_category_rates <- function(g)
  pmax(persiste_gamma_rates(g$alpha, g$k, g$median), 1e-250)

# MODEL_ARGS of persiste_r.c.
.persiste_model_args <- function(m) {
  pad <- function(x) if (length(x)) as.double(x) else 0
  e <- m$error
  g <- m$gamma
  l <- m$lineage
  list(m$condition, m$min_present,
       length(e$absent), pad(e$absent), pad(e$present),
       length(g$rates), pad(rep(1 / max(1L, g$k), length(g$rates))),
       pad(g$rates),
       length(l$gain), pad(l$gain), pad(l$loss), m$observable)
}

# The size of d_model: 2 per error pair, 3 per category, 2 per node.
.persiste_n_model <- function(m)
  2L * length(m$error$absent) + 3L * length(m$gamma$rates) +
    2L * length(m$lineage$gain)

# d log(rate_k) / d log(alpha) of the gamma categories: the library has no
# derivative of its rates, so a five-point central difference in log alpha
# of the multipliers actually used (a one-sided three-point one within two
# steps of [1e-3, 1e4]), accurate to ~1e-12 where the rates are.
.persiste_dlog_rates <- function(g) {
  if (g$k == 1L) return(0)
  h <- 1e-3
  la <- log(g$alpha)
  r <- function(d) log(if (d == 0) g$rates else
    .persiste_category_rates(list(alpha = exp(la + d), k = g$k,
                                  median = g$median)))
  if (la - 2 * h >= log(1e-3) && la + 2 * h <= log(1e4)) {
    (8 * (r(h) - r(-h)) - (r(2 * h) - r(-2 * h))) / (12 * h)
  } else {
    s <- if (la - 2 * h < log(1e-3)) 1 else -1
    s * (-3 * r(0) + 4 * r(s * h) - r(2 * s * h)) / (2 * h)
  }
}

# The derivatives of the total with respect to the model's parameters, from
# d_model and its layout: per error pair (named by genome when per genome),
# log(gamma alpha) (through the rates' central differences in log alpha),
# per lineage row (the sum over the branches it sets).
.persiste_model_grad <- function(m, d_model, layout) {
  block <- function(which) {
    off <- layout[2L * which - 1L]
    n <- layout[2L * which]
    d_model[off + seq_len(n)]
  }
  out <- list()
  if (!is.null(m$error)) {
    out$d_log_error_absent <- setNames(block(1L), m$error$tips)
    out$d_log_error_present <- setNames(block(2L), m$error$tips)
  }
  if (!is.null(m$gamma)) {
    d_rate <- block(3L) + block(4L)  # the multiplier shared by both rates
    out$d_log_gamma_alpha <- sum(d_rate * .persiste_dlog_rates(m$gamma))
  }
  if (!is.null(m$lineage)) {
    rows <- seq_along(m$lineage$rows)
    by_row <- function(d) setNames(vapply(rows, function(j)
      sum(d[m$lineage$row_of == j]), 0), m$lineage$rows)
    out$d_log_lineage_gain <- by_row(block(6L))
    out$d_log_lineage_loss <- by_row(block(7L))
  }
  out
}

## Data -------------------------------------------------------------------

# What the library keeps of the input, and the names of the kept families.
# With drop_unobservable = TRUE, families outside the conditioning event
# (condition, min_present) are left out and named in `excluded`.
persiste_dims <- function(tree, pam, drop_extra_taxa = FALSE,
                          drop_absent = TRUE, missing_as_unknown = FALSE,
                          condition = "present", min_present = 1L,
                          drop_unobservable = FALSE) {
  inputs <- .persiste_inputs(tree, pam, drop_extra_taxa, drop_absent,
                             missing_as_unknown)
  m <- .persiste_model(inputs, condition, min_present,
                       drop_unobservable = drop_unobservable)
  .persiste_dims(inputs, m, pam)
}

.persiste_dims <- function(inputs, m, pam) {
  args <- c(inputs, .persiste_model_args(m))
  tips <- m$error$tips
  n_rows <- inputs[[5]][1]
  r <- .persiste_call("persiste_r_dims", args, out = integer(7),
                      kept = integer(max(1L, n_rows)), tips = tips)
  d <- list(n_families = r$out[1], n_genomes = r$out[2], n_tips = r$out[3],
            n_dropped_genomes = r$out[4], n_dropped_families = r$out[5],
            n_excluded = r$out[6])
  if (n_rows > 0L) {  # a matrix: the kept rows keep their names
    rows <- rownames(pam)
    if (is.null(rows)) rows <- as.character(seq_len(n_rows))
    d$families <- rows[r$kept == 1L]
    d$excluded <- rows[r$kept == 2L]
  } else {            # a file: the names come from the C reader
    n <- d$n_families + d$n_excluded
    names <- .persiste_call("persiste_r_family_names", args, n_names = n,
                            names = rep(strrep(" ", r$out[7]), max(1L, n)),
                            tips = tips)$names[seq_len(n)]
    d$families <- names[seq_len(d$n_families)]
    d$excluded <- names[d$n_families + seq_len(d$n_excluded)]
  }
  d
}

## Evaluation -------------------------------------------------------------

# gain and loss: one value each or one per family (n), positive, finite.
.persiste_check_rates <- function(n, gain, loss) {
  if (!(length(gain) %in% c(1L, n)) || length(loss) != length(gain))
    stop("gain and loss: one value each, or one per family (", n, ")",
         call. = FALSE)
  if (!is.numeric(gain) || !is.numeric(loss) ||
      any(!is.finite(gain) | gain <= 0 | !is.finite(loss) | loss <= 0))
    stop("gain and loss must be positive and finite", call. = FALSE)
}

# Per-family values, named by family, at gain and loss (one value each, or
# one per kept family); with model_grad, the model's derivatives too.
.persiste_eval <- function(inputs, m, dims, gain, loss, gradient, threads,
                           model_grad = gradient) {
  n <- dims$n_families
  .persiste_check_rates(n, gain, loss)
  n_model <- if (gradient && model_grad) .persiste_n_model(m) else 0L
  args <- list(threads = as.integer(threads), sizes = c(n, n_model),
               n_rates = length(gain), log_gain = log(gain),
               log_loss = log(loss), loglik = double(max(1L, n)))
  call <- function(name, ...)
    do.call(.persiste_call, c(list(name, c(inputs, .persiste_model_args(m))),
                              args, list(...), list(tips = m$error$tips)))
  r <- if (gradient) {
    call("persiste_r_gradient", d_log_gain = double(max(1L, n)),
         d_log_loss = double(max(1L, n)), d_model = double(max(1L, n_model)),
         layout = integer(14))
  } else {
    call("persiste_r_loglik")
  }
  keep <- seq_len(n)
  out <- list(loglik = r$loglik[keep], d_log_gain = r$d_log_gain[keep],
              d_log_loss = r$d_log_loss[keep])
  out <- lapply(out, function(v) if (is.null(v)) v else
    setNames(v, dims$families))
  if (n_model > 0L)
    out <- c(out, .persiste_model_grad(m, r$d_model, r$layout))
  out
}

# persiste_loglik(tree, pam, gain, loss, condition = "present",
#                 by_family = FALSE, drop_extra_taxa = FALSE,
#                 drop_absent = TRUE, missing_as_unknown = FALSE,
#                 threads = getOption("persiste.threads", 0),
#                 error_absent = NULL, error_present = NULL,
#                 gamma_alpha = NULL, categories = 4, gamma_median = FALSE,
#                 min_present = 1, lineage = NULL, drop_unobservable = FALSE)
# Log-likelihood of the families at gain and loss (rates per unit branch
# length; one value each, or one per family). condition: "present" (each
# family is in at least min_present genomes, the default with 1), "none"
# or "variable" (neither absent nor present everywhere); it is evaluated
# on each family's known cells. Returns the total, or with by_family =
# TRUE the per-family values named by family. threads: 0 means one per
# core; the results do not depend on it.
# Model options (README.md): error_absent / error_present (observation
# error, one number each or named by genome), gamma_alpha with categories
# and gamma_median (discretised gamma rate categories across families),
# min_present, lineage (clade multipliers: data.frame node, gain, loss);
# drop_unobservable = TRUE leaves out families outside the conditioning
# event, as persiste_fit does.
#
# persiste_gradient(same arguments): also the exact derivatives with respect
# to log(gain) and log(loss), as list(loglik, d_log_gain, d_log_loss) of
# totals (the derivatives of the total with respect to rates shared by all
# families), or of per-family vectors with by_family = TRUE. With model
# options, the derivatives of the total with respect to them follow:
# d_log_error_absent, d_log_error_present (per pair, named by genome when
# per genome), d_log_gamma_alpha, d_log_lineage_gain, d_log_lineage_loss
# (per lineage row).
.persiste_evaluator <- function(gradient) {
  function(tree, pam, gain, loss, condition = "present", by_family = FALSE,
           drop_extra_taxa = FALSE, drop_absent = TRUE,
           missing_as_unknown = FALSE,
           threads = getOption("persiste.threads", 0L),
           error_absent = NULL, error_present = NULL, gamma_alpha = NULL,
           categories = 4L, gamma_median = FALSE, min_present = 1L,
           lineage = NULL, drop_unobservable = FALSE) {
    inputs <- .persiste_inputs(tree, pam, drop_extra_taxa, drop_absent,
                               missing_as_unknown)
    m <- .persiste_model(inputs, condition, min_present, error_absent,
                         error_present, gamma_alpha, categories,
                         gamma_median, lineage, drop_unobservable)
    g <- .persiste_eval(inputs, m, .persiste_dims(inputs, m, pam), gain,
                        loss, gradient, threads)
    if (!by_family) g[1:3] <- lapply(g[1:3], sum)
    if (gradient) g else g$loglik
  }
}
persiste_loglik <- .persiste_evaluator(gradient = FALSE)
persiste_gradient <- .persiste_evaluator(gradient = TRUE)

## Fit --------------------------------------------------------------------

.persiste_estimable <- c("error_absent", "error_present", "gamma_alpha")

# Maximum-likelihood gain and loss rates shared by all families: optim's
# L-BFGS-B on the log rates with the exact gradient. Each evaluation gives
# lnL and its gradient together, so the last one is cached for optim's
# separate fn and gr calls. factr = 10 asks for a relative change of the
# total below ~2e-15 (the default 1e7 stops ~1e-3 short on 5e5 log-units).
# The model options are held fixed, except those named in estimate
# (a subset of "error_absent", "error_present", "gamma_alpha"), fitted on
# logit(a), logit(b) and log(alpha) from their given values (default
# starts 0.01 and 1); an estimated error rate must be one number for every
# genome, and is bounded to [1e-8, 0.499] (so that a + b < 1). Families
# outside the conditioning event are left out and named in `excluded`.
persiste_fit <- function(tree, pam, condition = "present",
                         start = c(gain = 1, loss = 1),
                         drop_extra_taxa = FALSE, drop_absent = TRUE,
                         missing_as_unknown = FALSE,
                         threads = getOption("persiste.threads", 0L),
                         control = list(factr = 10),
                         error_absent = NULL, error_present = NULL,
                         gamma_alpha = NULL, categories = 4L,
                         gamma_median = FALSE, min_present = 1L,
                         lineage = NULL, estimate = character(0)) {
  unknown <- setdiff(estimate, .persiste_estimable)
  if (!is.character(estimate) || length(unknown))
    stop("estimate: a subset of \"", paste(.persiste_estimable,
                                          collapse = "\", \""), "\"",
         call. = FALSE)
  est_a <- "error_absent" %in% estimate
  est_b <- "error_present" %in% estimate
  est_alpha <- "gamma_alpha" %in% estimate
  for (what in c("error_absent", "error_present")[c(est_a, est_b)]) {
    x <- get(what)
    if (!is.null(x) && (!is.null(names(x)) || length(x) != 1L))
      stop("estimate: ", what, " is estimated as one number for every ",
           "genome; give one number (the start) or NULL", call. = FALSE)
  }
  if (est_a && (is.null(error_absent) || isTRUE(error_absent == 0)))
    error_absent <- 0.01
  if (est_b && (is.null(error_present) || isTRUE(error_present == 0)))
    error_present <- 0.01
  if (est_alpha && is.null(gamma_alpha)) gamma_alpha <- 1
  inputs <- .persiste_inputs(tree, pam, drop_extra_taxa, drop_absent,
                             missing_as_unknown)
  m <- .persiste_model(inputs, condition, min_present, error_absent,
                       error_present, gamma_alpha, categories, gamma_median,
                       lineage, drop_unobservable = TRUE)
  dims <- .persiste_dims(inputs, m, pam)
  logit <- function(p) log(p) - log1p(-p)
  expit <- function(x) 1 / (1 + exp(-x))
  par_names <- c("log_gain", "log_loss",
                 c("logit_error_absent", "logit_error_present",
                   "log_gamma_alpha")[c(est_a, est_b, est_alpha)])
  x0 <- c(log(start[[1]]), log(start[[2]]),
          if (est_a) logit(m$error$absent[1]),
          if (est_b) logit(m$error$present[1]),
          if (est_alpha) log(m$gamma$alpha))
  names(x0) <- par_names
  # the model at x: the estimated options replaced (an estimated error rate
  # is the same for every genome, also when the other one is per genome)
  model_at <- function(x) {
    i <- 2L
    if (est_a) m$error$absent[] <- expit(x[[i <- i + 1L]])
    if (est_b) m$error$present[] <- expit(x[[i <- i + 1L]])
    if (est_alpha) {
      m$gamma$alpha <- exp(x[[i <- i + 1L]])
      m$gamma$rates <- .persiste_category_rates(m$gamma)
    }
    m
  }
  last <- list(x = NULL)
  at <- function(x) {
    if (!identical(x, last$x)) {
      mx <- model_at(x)
      g <- .persiste_eval(inputs, mx, dims, exp(x[[1]]), exp(x[[2]]), TRUE,
                          threads, model_grad = length(x) > 2L)
      grad <- c(sum(g$d_log_gain), sum(g$d_log_loss),
                if (est_a)
                  sum(g$d_log_error_absent) * (1 - mx$error$absent[1]),
                if (est_b)
                  sum(g$d_log_error_present) * (1 - mx$error$present[1]),
                if (est_alpha) g$d_log_gamma_alpha)
      last <<- list(x = x, f = -sum(g$loglik), g = -unname(grad), m = mx)
    }
    last
  }
  fn <- function(x) at(x)$f
  gr <- function(x) at(x)$g
  opt <- if (length(x0) == 2L) {
    optim(x0, fn, gr, method = "L-BFGS-B", control = control)
  } else {
    lower <- c(-Inf, -Inf, rep(logit(1e-8), est_a + est_b),
               if (est_alpha) log(1e-3) + 1e-4)
    upper <- c(Inf, Inf, rep(logit(0.499), est_a + est_b),
               if (est_alpha) log(1e4) - 1e-4)
    optim(pmin(pmax(x0, lower), upper), fn, gr, method = "L-BFGS-B",
          lower = lower, upper = upper, control = control)
  }
  best <- at(opt$par)
  fit <- list(gain = exp(opt$par[[1]]), loss = exp(opt$par[[2]]))
  if (est_a) fit$error_absent <- best$m$error$absent[1]
  if (est_b) fit$error_present <- best$m$error$present[1]
  if (est_alpha) fit$gamma_alpha <- best$m$gamma$alpha
  c(fit, list(loglik = -opt$value, gradient = setNames(-best$g, par_names),
              n_families = dims$n_families, excluded = dims$excluded,
              convergence = opt$convergence, message = opt$message,
              counts = opt$counts))
}

## Reconstruction ---------------------------------------------------------

# The tree as ape numbers it (the phylo object given, or ape's reading of
# the same Newick) and the library's node (1-based) of each ape node: tips
# matched by name, then each internal node as the ape parent of its
# children (the library numbers children before parents), which must all
# agree. A node then has the same descendant tips in both numberings.
.persiste_ape_map <- function(tree, tr) {
  if (!requireNamespace("ape", quietly = TRUE))
    stop("persiste_reconstruct needs the R package ape (Debian: r-cran-ape)",
         call. = FALSE)
  phy <- if (inherits(tree, "phylo")) tree else if (grepl(";\\s*$", tree))
    ape::read.tree(text = tree) else ape::read.tree(path.expand(tree))
  if (!inherits(phy, "phylo"))
    stop("tree: ape does not read it as one tree", call. = FALSE)
  differ <- function(what)
    stop("tree: ape and the library read different trees (", what, ")",
         call. = FALSE)
  n_tips <- length(phy$tip.label)
  n <- n_tips + phy$Nnode
  if (n != tr$n_nodes || n_tips != tr$n_tips)
    differ(sprintf("%d tips and %d nodes in ape, %d and %d in the library",
                   n_tips, n, tr$n_tips, tr$n_nodes))
  up <- rep(NA_integer_, n)  # ape's parent of each ape node
  up[phy$edge[, 2]] <- phy$edge[, 1]
  ape_of <- rep(NA_integer_, n)
  ape_of[seq_len(n_tips)] <- match(tr$tips, phy$tip.label)
  if (anyNA(ape_of[seq_len(n_tips)]))
    differ(paste0("tip '", tr$tips[is.na(ape_of[seq_len(n_tips)])][1],
                  "' is not in the phylo object's tip.label; write.tree ",
                  "rewrites labels with spaces or any of ,:;()"))
  for (v in seq_len(n - 1L)) {
    p <- tr$parent[v] + 1L
    a <- up[ape_of[v]]
    if (is.na(a) || (!is.na(ape_of[p]) && ape_of[p] != a))
      differ(sprintf("the parent of library node %d", v - 1L))
    ape_of[p] <- a
  }
  if (anyDuplicated(ape_of) || !is.na(up[ape_of[n]]))
    differ("the internal nodes do not pair up")
  lib_of <- integer(n)
  lib_of[ape_of] <- seq_len(n)
  list(phy = phy, lib_of = lib_of)
}

# Per library node: two tips whose most recent common ancestor it is (a
# tip of its first child and one of its second; "" at a tip, the same tip
# twice at a node of one child).
.persiste_clade_tips <- function(tr) {
  n <- tr$n_nodes
  nt <- tr$n_tips
  first <- c(seq_len(nt), rep(NA_integer_, n - nt))  # a tip below each node
  a <- b <- character(n)
  for (v in seq_len(n - 1L)) {
    p <- tr$parent[v] + 1L
    if (is.na(first[p])) {
      first[p] <- first[v]
    } else if (!nzchar(b[p])) {
      a[p] <- tr$label[first[p]]
      b[p] <- tr$label[first[v]]
    }
  }
  one <- seq_len(n) > nt & !nzchar(a)
  a[one] <- b[one] <- tr$label[first[one]]
  list(a = a, b = b)
}

# groups: NULL (one group of every family), a character or factor vector
# named by family, or a data.frame with columns family and group. Returns
# the group names (a factor's levels, or the sorted labels; then
# "ungrouped" for the kept families not listed) and each kept family's
# 0-based group. Listed families the data lacks (dropped as absent
# everywhere, or not in this table) are ignored.
.persiste_groups <- function(groups, families) {
  if (is.null(groups))
    return(list(names = "all", index = integer(length(families)),
                given = FALSE))
  usage <- paste("groups: a character or factor vector named by family, or",
                 "a data.frame with columns family and group")
  if (is.data.frame(groups)) {
    if (!all(c("family", "group") %in% names(groups))) stop(usage,
                                                            call. = FALSE)
    fam <- groups$family
    if (is.factor(fam)) fam <- as.character(fam)
    grp <- groups$group
  } else {
    if (is.null(names(groups))) stop(usage, call. = FALSE)
    fam <- names(groups)
    grp <- unname(groups)
  }
  if (!is.character(fam) || anyNA(fam) || !all(nzchar(fam)))
    stop("groups: every family must be named (no NA or empty name)",
         call. = FALSE)
  if (!is.character(grp) && !is.factor(grp))
    stop("groups: the group labels must be character or factor (use ",
         "as.character())", call. = FALSE)
  bad <- which(is.na(grp) | !nzchar(as.character(grp)))
  if (length(bad))
    stop("groups: family '", fam[bad[1]], "' has an NA or empty group",
         call. = FALSE)
  dup <- unique(fam[duplicated(fam)])
  if (length(dup))
    stop("groups: family '", dup[1], "' is listed twice", call. = FALSE)
  lev <- if (is.factor(grp)) levels(grp) else sort(unique(grp),
                                                    method = "radix")
  at <- match(families, fam)
  if (length(families) && all(is.na(at)))
    stop("groups: no family of the data is listed (the data's families: ",
         paste(head(families, 3), collapse = ", "),
         if (length(families) > 3) ", ...", ")", call. = FALSE)
  label <- ifelse(is.na(at), "ungrouped", as.character(grp)[at])
  if (anyNA(at) && !("ungrouped" %in% lev)) lev <- c(lev, "ungrouped")
  list(names = lev, index = match(label, lev) - 1L, given = TRUE)
}

# persiste_reconstruct(tree, pam, gain = NULL, loss = NULL,
#                      condition = "present", groups = NULL,
#                      per_family = FALSE, <persiste_loglik's options>,
#                      estimate = character(0))
# Where the families were gained and lost: per node the posterior
# probability that it carried each family, and per branch the expected
# numbers of gains (0 -> 1) and losses (1 -> 0) on it, given each family's
# cells, under every model option (persiste_reconstruct_batch). gain and
# loss as in persiste_loglik (one each or one per family); when both are
# NULL they are fitted first by persiste_fit with the same options (and
# estimate, whose estimated options are then used too). groups: NULL, a
# character/factor vector named by family or a data.frame family, group;
# families not listed form the group "ungrouped". Returns a list:
#   branches    one row per edge, in the order of phylo$edge: parent_node,
#               child_node (ape's numbers), label (tip, node label or the
#               library's node number), tip_a, tip_b (two tips whose most
#               recent common ancestor the child is; "" for tips), length,
#               expected_gains, expected_losses (summed over families),
#               then gains_<group>, losses_<group> per group (if given)
#   nodes       one row per ape node: node, label, expected_present (the
#               expected number of families carried), present_<group>
#   per_family  (per_family = TRUE) a long data.frame: family, node (ape),
#               p_present, expected_gains, expected_losses (of the branch
#               above node; 0 at the root)
#   groups      group, n_families, expected_gains, expected_losses
#   n_impossible  families of likelihood 0 (zeros in per_family, left out
#               of the sums); gain, loss (the rates used); fit (when
#               fitted); excluded (drop_unobservable); phylo (the ape tree
#               the node numbers refer to)
# The expectations are not conditioned on ascertainment (for families
# inside the conditioning event they are the same).
persiste_reconstruct <- function(tree, pam, gain = NULL, loss = NULL,
                                 condition = "present", groups = NULL,
                                 per_family = FALSE, drop_extra_taxa = FALSE,
                                 drop_absent = TRUE,
                                 missing_as_unknown = FALSE,
                                 threads = getOption("persiste.threads", 0L),
                                 error_absent = NULL, error_present = NULL,
                                 gamma_alpha = NULL, categories = 4L,
                                 gamma_median = FALSE, min_present = 1L,
                                 lineage = NULL, drop_unobservable = FALSE,
                                 estimate = character(0)) {
  if (is.null(gain) != is.null(loss))
    stop("gain and loss: give both, or neither (then they are fitted)",
         call. = FALSE)
  if (!is.logical(per_family) || length(per_family) != 1L ||
      is.na(per_family))
    stop("per_family: TRUE or FALSE", call. = FALSE)
  fit <- NULL
  if (is.null(gain)) {
    fit <- persiste_fit(tree, pam, condition,
                        drop_extra_taxa = drop_extra_taxa,
                        drop_absent = drop_absent,
                        missing_as_unknown = missing_as_unknown,
                        threads = threads, error_absent = error_absent,
                        error_present = error_present,
                        gamma_alpha = gamma_alpha, categories = categories,
                        gamma_median = gamma_median,
                        min_present = min_present, lineage = lineage,
                        estimate = estimate)
    gain <- fit$gain
    loss <- fit$loss
    if (!is.null(fit$error_absent)) error_absent <- fit$error_absent
    if (!is.null(fit$error_present)) error_present <- fit$error_present
    if (!is.null(fit$gamma_alpha)) gamma_alpha <- fit$gamma_alpha
  } else if (length(estimate)) {
    stop("estimate: only when gain and loss are fitted (left NULL)",
         call. = FALSE)
  }
  inputs <- .persiste_inputs(tree, pam, drop_extra_taxa, drop_absent,
                             missing_as_unknown)
  m <- .persiste_model(inputs, condition, min_present, error_absent,
                       error_present, gamma_alpha, categories, gamma_median,
                       lineage, drop_unobservable)
  dims <- .persiste_dims(inputs, m, pam)
  n <- dims$n_families
  .persiste_check_rates(n, gain, loss)
  tr <- .persiste_tree(inputs)
  map <- .persiste_ape_map(tree, tr)
  g <- .persiste_groups(groups, dims$families)
  nn <- tr$n_nodes
  ng <- length(g$names)
  if (per_family && as.double(n) * nn > .Machine$integer.max)
    stop("per_family: ", n, " families x ", nn, " nodes is more than an R ",
         "vector passed to .C holds; use groups instead", call. = FALSE)
  cells <- if (per_family) max(1L, n * nn) else 1L
  r <- do.call(.persiste_call, c(
    list("persiste_r_reconstruct", c(inputs, .persiste_model_args(m))),
    list(threads = as.integer(threads),
         sizes = as.integer(c(n, nn, ng, per_family)),
         n_rates = length(gain), log_gain = log(gain), log_loss = log(loss),
         group = if (n > 0L) as.integer(g$index) else 0L,
         present = double(cells), gains = double(cells),
         losses = double(cells), sum_present = double(ng * nn),
         sum_gains = double(ng * nn), sum_losses = double(ng * nn),
         n_impossible = 0L),
    list(tips = m$error$tips)))
  lib <- map$lib_of  # the library's node (1-based) of each ape node
  # the sums as ape nodes x groups
  by_group <- function(x) matrix(x, nn, ng)[lib, , drop = FALSE]
  sp <- by_group(r$sum_present)
  sg <- by_group(r$sum_gains)
  sl <- by_group(r$sum_losses)
  label <- ifelse(nzchar(tr$label), tr$label, as.character(seq_len(nn) - 1L))
  clade <- .persiste_clade_tips(tr)
  edge <- map$phy$edge
  child <- edge[, 2]
  v <- lib[child]
  branches <- data.frame(parent_node = edge[, 1], child_node = child,
                         label = label[v], tip_a = clade$a[v],
                         tip_b = clade$b[v], length = tr$branch_length[v],
                         expected_gains = rowSums(sg)[child],
                         expected_losses = rowSums(sl)[child],
                         stringsAsFactors = FALSE)
  nodes <- data.frame(node = seq_len(nn), label = label[lib],
                      expected_present = rowSums(sp),
                      stringsAsFactors = FALSE)
  if (g$given) {
    for (i in seq_len(ng)) {
      branches[[paste0("gains_", g$names[i])]] <- sg[child, i]
      branches[[paste0("losses_", g$names[i])]] <- sl[child, i]
      nodes[[paste0("present_", g$names[i])]] <- sp[, i]
    }
  }
  rates <- function(x) if (length(x) == n && n > 1L)
    setNames(x, dims$families) else x
  out <- list(branches = branches, nodes = nodes)
  if (per_family) {
    # the library's family-major layout, read ape node by ape node
    at <- as.vector(outer(lib, (seq_len(n) - 1L) * nn, "+"))
    out$per_family <- data.frame(
      family = rep(dims$families, each = nn), node = rep(seq_len(nn), n),
      p_present = r$present[at], expected_gains = r$gains[at],
      expected_losses = r$losses[at], stringsAsFactors = FALSE)
  }
  out$groups <- data.frame(group = g$names,
                           n_families = tabulate(g$index + 1L, ng),
                           expected_gains = colSums(sg),
                           expected_losses = colSums(sl),
                           stringsAsFactors = FALSE, row.names = NULL)
  c(out, list(n_impossible = r$n_impossible, gain = rates(gain),
              loss = rates(loss), fit = fit, n_families = n,
              excluded = dims$excluded, phylo = map$phy))
}
