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
  if (inherits(tree, "phylo")) tree <- ape::write.tree(tree)
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
  PERSISTE_DATA_MISSING_AS_UNKNOWN = "missing_as_unknown = TRUE")

# Calls a shim; an error status becomes an R error carrying the library's
# message (file, line, column, genome names ...).
.persiste_call <- function(name, inputs, ...) {
  r <- do.call(.C, c(list(name), unname(inputs), list(...),
                     list(status = 0L, msg = strrep(" ", 511L),
                          PACKAGE = "persiste_r")))
  if (r$status != 0L) {
    msg <- trimws(r$msg)
    for (flag in names(.persiste_flag_names))
      msg <- gsub(flag, .persiste_flag_names[[flag]], msg, fixed = TRUE)
    stop("persiste: ", msg, call. = FALSE)
  }
  r
}

# What the library keeps of the input, and the names of the kept families.
persiste_dims <- function(tree, pam, drop_extra_taxa = FALSE,
                          drop_absent = TRUE, missing_as_unknown = FALSE) {
  .persiste_dims(.persiste_inputs(tree, pam, drop_extra_taxa, drop_absent,
                                  missing_as_unknown), pam)
}

.persiste_dims <- function(inputs, pam) {
  n_rows <- inputs[[5]][1]
  r <- .persiste_call("persiste_r_dims", inputs, out = integer(6),
                      kept = integer(max(1L, n_rows)))
  d <- list(n_families = r$out[1], n_genomes = r$out[2], n_tips = r$out[3],
            n_dropped_genomes = r$out[4], n_dropped_families = r$out[5])
  if (n_rows > 0L) {  # a matrix: the kept rows keep their names
    d$families <- rownames(pam)[r$kept == 1L]
  } else {            # a file: the names come from the C reader
    d$families <- .persiste_call("persiste_r_family_names", inputs,
                                 names = rep(strrep(" ", r$out[6]),
                                             d$n_families))$names
  }
  d
}

# Per-family values, named by family, at gain and loss (one value each, or
# one per kept family).
.persiste_eval <- function(inputs, dims, gain, loss, condition, gradient,
                           threads) {
  n <- dims$n_families
  if (!(length(gain) %in% c(1L, n)) || length(loss) != length(gain))
    stop("gain and loss: one value each, or one per family (", n, ")",
         call. = FALSE)
  if (any(!is.finite(gain) | gain <= 0 | !is.finite(loss) | loss <= 0))
    stop("gain and loss must be positive and finite", call. = FALSE)
  cond <- .persiste_conditions[match.arg(condition, names(.persiste_conditions))]
  args <- list(condition = cond, threads = as.integer(threads),
               n_rates = length(gain), log_gain = log(gain),
               log_loss = log(loss), loglik = double(n))
  r <- if (gradient) {
    do.call(.persiste_call, c(list("persiste_r_gradient", inputs), args,
                              list(d_log_gain = double(n),
                                   d_log_loss = double(n))))
  } else {
    do.call(.persiste_call, c(list("persiste_r_loglik", inputs), args))
  }
  out <- list(loglik = r$loglik, d_log_gain = r$d_log_gain,
              d_log_loss = r$d_log_loss)
  lapply(out, function(v) if (is.null(v)) v else setNames(v, dims$families))
}

# persiste_loglik(tree, pam, gain, loss, condition = "present",
#                 by_family = FALSE, drop_extra_taxa = FALSE,
#                 drop_absent = TRUE, missing_as_unknown = FALSE,
#                 threads = getOption("persiste.threads", 0))
# Log-likelihood of the families at gain and loss (rates per unit branch
# length; one value each, or one per family). condition: "present" (each
# family is in at least one genome, the default), "none" or "variable"
# (neither absent nor present everywhere). Returns the total, or with
# by_family = TRUE the per-family values named by family. threads: 0 means
# one per core; the results do not depend on it.
#
# persiste_gradient(same arguments): also the exact derivatives with respect
# to log(gain) and log(loss), as list(loglik, d_log_gain, d_log_loss) of
# totals (the derivatives of the total with respect to rates shared by all
# families), or of per-family vectors with by_family = TRUE.
.persiste_evaluator <- function(gradient) {
  function(tree, pam, gain, loss, condition = "present", by_family = FALSE,
           drop_extra_taxa = FALSE, drop_absent = TRUE,
           missing_as_unknown = FALSE,
           threads = getOption("persiste.threads", 0L)) {
    inputs <- .persiste_inputs(tree, pam, drop_extra_taxa, drop_absent,
                               missing_as_unknown)
    g <- .persiste_eval(inputs, .persiste_dims(inputs, pam), gain, loss,
                        condition, gradient, threads)
    if (!by_family) g <- lapply(g, sum)
    if (gradient) g else g$loglik
  }
}
persiste_loglik <- .persiste_evaluator(gradient = FALSE)
persiste_gradient <- .persiste_evaluator(gradient = TRUE)

# Maximum-likelihood gain and loss rates shared by all families: optim's
# L-BFGS-B on the log rates with the exact gradient. Each evaluation gives
# lnL and its gradient together, so the last one is cached for optim's
# separate fn and gr calls. factr = 10 asks for a relative change of the
# total below ~2e-15 (the default 1e7 stops ~1e-3 short on 5e5 log-units).
persiste_fit <- function(tree, pam, condition = "present",
                         start = c(gain = 1, loss = 1),
                         drop_extra_taxa = FALSE, drop_absent = TRUE,
                         missing_as_unknown = FALSE,
                         threads = getOption("persiste.threads", 0L),
                         control = list(factr = 10)) {
  inputs <- .persiste_inputs(tree, pam, drop_extra_taxa, drop_absent,
                             missing_as_unknown)
  dims <- .persiste_dims(inputs, pam)
  last <- list(x = NULL)
  at <- function(x) {
    if (!identical(x, last$x)) {
      g <- .persiste_eval(inputs, dims, exp(x[1]), exp(x[2]), condition,
                          TRUE, threads)
      last <<- list(x = x, f = -sum(g$loglik),
                    g = -c(sum(g$d_log_gain), sum(g$d_log_loss)))
    }
    last
  }
  opt <- optim(log(start), function(x) at(x)$f, function(x) at(x)$g,
               method = "L-BFGS-B", control = control)
  list(gain = exp(opt$par[[1]]), loss = exp(opt$par[[2]]),
       loglik = -opt$value, gradient = -at(opt$par)$g,
       n_families = dims$n_families, convergence = opt$convergence,
       message = opt$message, counts = opt$counts)
}
