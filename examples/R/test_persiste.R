# Tests of the R wrappers against independent values: REFERENCE.md of both
# bundled datasets (IQ-TREE, phangorn, NumPy), phytools::fitMk with a
# fixed Q on a small tree, likelihoods and reconstructions written out in
# R (integrate() for the expected gains and losses). Prints the agreement
# figures; exits 1 on failure.
#
#   Rscript test_persiste.R PERSISTE_R_SO PERSISTE_R DATA_DIR
args <- commandArgs(trailingOnly = TRUE)
stopifnot(length(args) == 3L)
for (pkg in c("ape", "phytools")) {
  if (!requireNamespace(pkg, quietly = TRUE)) {
    cat("skipped: R package", pkg, "is not installed (Debian: r-cran-",
        pkg, ")\n", sep = "")
    quit(status = 77)
  }
}
source(args[2])
persiste_load(args[1])
data_dir <- args[3]

failures <- 0L
# Passes when max |got - expected| (relative to |expected| when rel) <= tol.
check <- function(what, got, expected, tol, rel = TRUE) {
  d <- abs(got - expected)
  if (rel) d <- d / abs(expected)
  worst <- max(d)
  ok <- length(got) == length(expected) && is.finite(worst) && worst <= tol
  cat(sprintf("%-4s %-58s max %s difference %.2g (tolerance %.0g)\n",
              if (ok) "ok" else "FAIL", what, if (rel) "relative" else
              "absolute", worst, tol))
  if (!ok) failures <<- failures + 1L
}
# Passes when expr raises an R error whose message contains every pattern.
check_error <- function(what, expr, patterns) {
  msg <- tryCatch({ expr; "" }, error = conditionMessage)
  ok <- all(vapply(patterns, grepl, TRUE, x = msg, fixed = TRUE))
  cat(sprintf("%-4s %s: %s\n", if (ok) "ok" else "FAIL", what,
              if (nzchar(msg)) msg else "no error"))
  if (!ok) failures <<- failures + 1L
}
conditions <- c("none", "present", "variable")

## 1. Bundled data against REFERENCE.md --------------------------------
h <- file.path(data_dir, "harris2022-plants30")
h_tree <- file.path(h, "harris2022_dated_tree.nwk")
h_pam <- file.path(h, "harris2022_pam.Rtab")
h_total <- c(none = -205361.7276424572, present = -201262.4335841910,
             variable = -201067.7062615576)
h_first5 <- rbind(
  none = c(-12.802627074919, -8.920948884983, -21.280171853575,
           -6.966540751921, -9.709389152363),
  present = c(-12.605753861094, -8.724075671158, -21.083298639750,
              -6.769667538096, -9.512515938538),
  variable = c(-12.596401862120, -8.714723672184, -21.073946640776,
               -6.760315539122, -9.503163939564))
for (cond in conditions) {
  ll <- persiste_loglik(h_tree, h_pam, 0.14, 0.35, cond, by_family = TRUE)
  check(paste("harris2022 total,", cond), sum(ll), h_total[[cond]], 1e-9)
  check(paste("harris2022 first five families,", cond), ll[1:5],
        h_first5[cond, ], 1e-11, rel = FALSE)
}

e <- file.path(data_dir, "efm-clade-powerbacgwas")
e_tree <- file.path(e, "efm_clade.tree.nwk")
e_pam <- file.path(e, "efm_clade.gene_presence_absence.Rtab.gz")
e_total <- c(none = -477505.6824325649, present = -477505.6822940703,
             variable = -477505.6793157684)
e_first <- c(none = -14.402561684227566, present = -14.402561658374545)
for (cond in conditions) {
  ll <- persiste_loglik(e_tree, e_pam, 32, 27, cond, by_family = TRUE,
                        drop_extra_taxa = TRUE)
  check(paste("efm total,", cond), sum(ll), e_total[[cond]], 1e-9)
  if (cond != "variable")
    check(paste("efm first five (core) families,", cond), ll[1:5],
          rep(e_first[[cond]], 5), 1e-11, rel = FALSE)
}
d <- persiste_dims(e_tree, e_pam, drop_extra_taxa = TRUE)
check("efm kept families / genomes / dropped (5357, 761, 1, 86)",
      c(d$n_families, d$n_genomes, d$n_dropped_genomes,
        d$n_dropped_families), c(5357, 761, 1, 86), 0, rel = FALSE)

# Maxima: REFERENCE.md gives them to 2-3 decimals; compare at that precision.
f <- persiste_fit(h_tree, h_pam, "present")
cat(sprintf("     harris2022 fit: gain %.6f, loss %.6f, lnL %.6f (%s)\n",
            f$gain, f$loss, f$loglik, f$message))
check("harris2022 fit, gain 0.139 and loss 0.355", c(f$gain, f$loss),
      c(0.139, 0.355), 5e-4, rel = FALSE)
f <- persiste_fit(e_tree, e_pam, "present", drop_extra_taxa = TRUE)
cat(sprintf("     efm fit: gain %.6f, loss %.6f, lnL %.6f (%s)\n",
            f$gain, f$loss, f$loglik, f$message))
check("efm fit, gain 32.02 and loss 27.14", c(f$gain, f$loss),
      c(32.02, 27.14), 5e-3, rel = FALSE)
check("efm fit, lnL -477505.280", f$loglik, -477505.280, 5e-4, rel = FALSE)

# The same table as an R matrix (genomes as column names) and as a file.
m <- as.matrix(read.delim(h_pam, row.names = 1, check.names = FALSE))
check("harris2022 from an R matrix = from the file",
      persiste_loglik(h_tree, m, 0.14, 0.35), h_total[["present"]], 1e-9)

## 2. Single families on a small tree against phytools::fitMk -----------
# A polytomy, a very short branch and unknown cells included. fitMk takes
# tip probabilities (unknown = c(1, 1)), the rate matrix fixed, and the
# stationary root prior pi = (mu, lam) / (lam + mu).
tree <- ape::read.tree(text = paste0(
  "(((t1:0.3,t2:0.15):0.4,(t3:0.05,t4:0.6,t5:0.2):0.25):0.1,",
  "((t6:0.7,t7:0.001):0.35,t8:1.2):0.5);"))
tips <- tree$tip.label
fitmk_loglik <- function(x, lam, mu) {
  Q <- matrix(c(-lam, lam, mu, -mu), 2, 2, byrow = TRUE,
              dimnames = list(c("0", "1"), c("0", "1")))
  p <- cbind("0" = ifelse(is.na(x), 1, 1 - x), "1" = ifelse(is.na(x), 1, x))
  rownames(p) <- tips
  phytools::fitMk(tree, p, fixedQ = Q, pi = c(mu, lam) / (lam + mu))$logLik
}
# Every 0/1 pattern of the 8 tips, then four with unknown cells.
pam <- as.matrix(expand.grid(rep(list(0:1), length(tips))))
set.seed(4)
unknown <- pam[sample(nrow(pam), 4), ]
unknown[cbind(1:4, sample(length(tips), 4))] <- NA
pam <- rbind(pam, unknown)
dimnames(pam) <- list(paste0("fam", seq_len(nrow(pam))), tips)
lam <- 0.7
mu <- 1.3
oracle <- apply(pam, 1, fitmk_loglik, lam = lam, mu = mu)
# Conditioning is on each family's known cells: its unknown cells stay
# unknown in the all-absent (all-present) pattern of the divisor.
p_all <- function(x, v) exp(fitmk_loglik(ifelse(is.na(x), NA, v), lam, mu))
p_absent <- apply(pam, 1, p_all, v = 0)
p_present <- apply(pam, 1, p_all, v = 1)
oracle_cond <- list(none = oracle, present = oracle - log1p(-p_absent),
                    variable = oracle - log1p(-p_absent - p_present))
for (cond in conditions) {
  ll <- persiste_loglik(tree, pam, lam, mu, cond, by_family = TRUE)
  # The all-absent family is dropped (drop_absent = TRUE); names follow.
  kept <- names(ll)
  check(sprintf("fitMk, %d families, %s", length(ll), cond), ll,
        oracle_cond[[cond]][kept], 1e-12)
}
check("all-absent family dropped, names kept in order",
      length(setdiff(rownames(pam), names(ll))), 1, 0, rel = FALSE)

# Exact gradient against central differences of fitMk in log rates.
h_step <- 1e-4
fd <- function(x, dlam, dmu) {
  (fitmk_loglik(x, lam * exp(dlam * h_step), mu * exp(dmu * h_step)) -
     fitmk_loglik(x, lam * exp(-dlam * h_step), mu * exp(-dmu * h_step))) /
    (2 * h_step)
}
some <- pam[c(2, 77, 200, 256, 257, 260), ]
g <- persiste_gradient(tree, some, lam, mu, "none", by_family = TRUE)
fd_gain <- apply(some, 1, fd, dlam = 1, dmu = 0)
fd_loss <- apply(some, 1, fd, dlam = 0, dmu = 1)
check("gradient vs fitMk central differences, d/dlog(gain)", g$d_log_gain,
      fd_gain, 1e-7)
check("gradient vs fitMk central differences, d/dlog(loss)", g$d_log_loss,
      fd_loss, 1e-7)
g <- persiste_gradient(tree, some, lam, mu, "none")
check("gradient of the total (rates shared by all families)",
      c(g$loglik, g$d_log_gain, g$d_log_loss),
      c(sum(oracle[rownames(some)]), sum(fd_gain), sum(fd_loss)), 1e-7)

# Per-family rates: each family at its own (gain, loss).
gains <- c(0.2, 1, 5, 0.7, 3, 0.05)
losses <- c(0.3, 4, 1, 0.1, 3, 2)
check("per-family rates vs fitMk",
      persiste_loglik(tree, some, gains, losses, "none", by_family = TRUE),
      mapply(function(i) fitmk_loglik(some[i, ], gains[i], losses[i]),
             seq_len(nrow(some))), 1e-12)

# A tip missing from the table is unknown in every family.
no_t8 <- some
no_t8[, "t8"] <- NA
check("tip missing from the table, missing_as_unknown = TRUE",
      persiste_loglik(tree, some[, -8], lam, mu, "none", by_family = TRUE,
                      missing_as_unknown = TRUE),
      apply(no_t8, 1, fitmk_loglik, lam = lam, mu = mu), 1e-12)

# The tree as a phylo object, Newick text or a file; 1 or 2 threads.
nwk <- ape::write.tree(tree)
nwk_file <- tempfile(fileext = ".nwk")
writeLines(nwk, nwk_file)
a <- persiste_loglik(tree, pam, lam, mu, by_family = TRUE, threads = 1)
check("phylo = Newick text = Newick file = 2 threads (bitwise)",
      as.numeric(!c(identical(a, persiste_loglik(nwk, pam, lam, mu,
                                                 by_family = TRUE)),
                    identical(a, persiste_loglik(nwk_file, pam, lam, mu,
                                                 by_family = TRUE)),
                    identical(a, persiste_loglik(tree, pam, lam, mu,
                                                 by_family = TRUE,
                                                 threads = 2)))),
      c(0, 0, 0), 0, rel = FALSE)

## 3. Errors carry the library's message ---------------------------------
bad <- pam
colnames(bad)[8] <- "not_a_genome"
check_error("mismatched genome names", persiste_loglik(tree, bad, 1, 1),
            c("not_a_genome", "not in the tree", "taxon names do not match",
              "use drop_extra_taxa = TRUE"))
check_error("malformed Newick", persiste_loglik("((t1:1,t2:1):1,t3 1);",
                                                pam, 1, 1),
            c("newick", "line 1, column", "malformed input"))
check_error("missing table file",
            persiste_loglik(tree, file.path(tempdir(), "none.Rtab"), 1, 1),
            c("none.Rtab", "input/output error"))
check_error("cell values other than 0, 1, NA",
            persiste_loglik(tree, pam * 2, 1, 1), "0 (absent), 1 (present)")

## 4. Model options -----------------------------------------------------
# Every option against an independent value: the likelihood written out by
# hand on two tips, fitMk with the error model's tip partials, plain calls
# at scaled rates (gamma) or on a Newick with scaled branch lengths
# (lineage multipliers), and counts of the table (excluded families).

# The tree of section 2 as Newick text with two internal labels; the branch
# lengths in order of appearance.
lab_newick <- function(len) do.call(sprintf, c(list(paste0(
  "(((t1:%.17g,t2:%.17g):%.17g,(t3:%.17g,t4:%.17g,t5:%.17g)cl:%.17g):%.17g,",
  "((t6:%.17g,t7:%.17g)c67:%.17g,t8:%.17g):%.17g);")), as.list(len)))
lab_len <- c(0.3, 0.15, 0.4, 0.05, 0.6, 0.2, 0.25, 0.1, 0.7, 0.001, 0.35,
             1.2, 0.5)
lab <- lab_newick(lab_len)
names(lab_len) <- c("t1", "t2", "t1t2", "t3", "t4", "t5", "cl", "left", "t6",
                    "t7", "c67", "t8", "right")
check("labelled Newick = section 2's tree",
      persiste_loglik(lab, pam, lam, mu, "present"),
      persiste_loglik(tree, pam, lam, mu, "present"), 1e-13)

# 4a. Neutral settings give the plain model, bit for bit.
root_to_cl <- data.frame(node = c("t1,t8", "cl"), gain = 1, loss = 1)
for (cond in conditions) {
  plain <- persiste_loglik(lab, pam, lam, mu, cond, by_family = TRUE)
  neutral <- list(
    "error 0, 0" = persiste_loglik(lab, pam, lam, mu, cond, by_family = TRUE,
                                   error_absent = 0, error_present = 0),
    "per-genome error 0" = persiste_loglik(
      lab, pam, lam, mu, cond, by_family = TRUE,
      error_absent = c(t3 = 0), error_present = c(t1 = 0, t8 = 0)),
    "1 gamma category" = persiste_loglik(lab, pam, lam, mu, cond,
                                         by_family = TRUE, gamma_alpha = 0.3,
                                         categories = 1),
    "lineage multipliers 1" = persiste_loglik(lab, pam, lam, mu, cond,
                                              by_family = TRUE,
                                              lineage = root_to_cl),
    "min_present 1" = persiste_loglik(lab, pam, lam, mu, cond,
                                      by_family = TRUE, min_present = 1))
  check(paste0("neutral options = plain (bitwise), ", cond, ": ",
               paste(names(neutral), collapse = ", ")),
        as.numeric(!vapply(neutral, identical, TRUE, plain)),
        rep(0, length(neutral)), 0, rel = FALSE)
}
check("harris2022, error 0 0, 1 category, multiplier 1 = plain (bitwise)",
      as.numeric(!identical(
        persiste_loglik(h_tree, h_pam, 0.14, 0.35, error_absent = 0,
                        error_present = 0, gamma_alpha = 2, categories = 1,
                        lineage = list(node = "Arabidopsis", gain = 1,
                                       loss = 1)),
        persiste_loglik(h_tree, h_pam, 0.14, 0.35))), 0, 0, rel = FALSE)

# 4b. Two tips written out by hand: (A:0.3, B:0.7), gain lam2, loss mu2,
# the stationary root at the base rates, tip partials over (absent,
# present): observed 1 -> (b, 1 - a), observed 0 -> (1 - b, a), unknown ->
# (1, 1); each branch at its own multipliers (gain, loss).
lam2 <- 0.6
mu2 <- 1.1
p_branch <- function(t, g, l) {
  e <- exp(-(g + l) * t)
  rbind(c(l + g * e, g * (1 - e)), c(l * (1 - e), g + l * e)) / (g + l)
}
tip_partial <- function(x, a, b)
  if (is.na(x)) c(1, 1) else if (x == 1) c(b, 1 - a) else c(1 - b, a)
two_tip <- function(x, a = c(0, 0), b = c(0, 0),
                    mult = list(c(1, 1), c(1, 1))) {
  root <- c(mu2, lam2) / (lam2 + mu2)
  below <- function(i, t)
    p_branch(t, lam2 * mult[[i]][1], mu2 * mult[[i]][2]) %*%
      tip_partial(x[i], a[i], b[i])
  sum(root * below(1, 0.3) * below(2, 0.7))
}
# PRESENT divides by 1 - P(all known cells observed absent), VARIABLE by
# 1 - P(all observed absent) - P(all observed present).
two_tip_lnl <- function(x, cond, ...) {
  fill <- function(v) ifelse(is.na(x), NA, v)
  log(two_tip(x, ...)) - switch(
    cond, none = 0, present = log1p(-two_tip(fill(0), ...)),
    variable = log1p(-two_tip(fill(0), ...) - two_tip(fill(1), ...)))
}
two <- "(A:0.3,B:0.7);"
two_pam <- rbind(c(1, 1), c(1, 0), c(0, 1), c(1, NA), c(NA, 1))
dimnames(two_pam) <- list(paste0("f", 1:5), c("A", "B"))
# Under VARIABLE a family with one known cell is outside the event
# (P(observable) = 0): only the first three families are compared there.
hand <- function(cond, ...) {
  rows <- if (cond == "variable") 1:3 else 1:5
  apply(two_pam[rows, ], 1, two_tip_lnl, cond = cond, ...)
}
lib2 <- function(cond, ...) {
  ll <- persiste_loglik(two, two_pam, lam2, mu2, cond, by_family = TRUE, ...)
  if (cond == "variable") ll[1:3] else ll
}
for (cond in conditions) {
  check(paste("two tips by hand, global error pair (0.05, 0.01),", cond),
        lib2(cond, error_absent = 0.05, error_present = 0.01),
        hand(cond, a = c(0.05, 0.05), b = c(0.01, 0.01)), 1e-14, rel = FALSE)
  check(paste("two tips by hand, error per genome,", cond),
        lib2(cond, error_absent = c(B = 0.03, A = 0.1),
             error_present = c(A = 0.02)),
        hand(cond, a = c(0.1, 0.03), b = c(0.02, 0)), 1e-14, rel = FALSE)
  check(paste("two tips by hand, lineage on A (gain x2.5, loss x0.4),", cond),
        lib2(cond, lineage = data.frame(node = "A", gain = 2.5, loss = 0.4)),
        hand(cond, mult = list(c(2.5, 0.4), c(1, 1))), 1e-14, rel = FALSE)
  check(paste("two tips by hand, later row overrides (root x3, A),", cond),
        lib2(cond, lineage = list(node = c("A,B", "A"), gain = c(3, 2.5),
                                  loss = c(3, 0.4)),
             error_absent = c(A = 0.1), error_present = 0.02),
        hand(cond, a = c(0.1, 0), b = c(0.02, 0.02),
             mult = list(c(2.5, 0.4), c(3, 3))), 1e-14, rel = FALSE)
  check(paste("two tips by hand, earlier row overridden (A, root x3),", cond),
        lib2(cond, lineage = list(node = c("A", "A,B"), gain = c(2.5, 3),
                                  loss = c(0.4, 3))),
        hand(cond, mult = list(c(3, 3), c(3, 3))), 1e-14, rel = FALSE)
}

# 4c. Observation error on eight tips: fitMk with the error model's tip
# partials; conditioning through the same partials on the known cells.
fitmk_err <- function(x, a, b) {
  Q <- matrix(c(-lam, lam, mu, -mu), 2, 2, byrow = TRUE,
              dimnames = list(c("0", "1"), c("0", "1")))
  p <- cbind("0" = ifelse(is.na(x), 1, ifelse(x == 1, b, 1 - b)),
             "1" = ifelse(is.na(x), 1, ifelse(x == 1, 1 - a, a)))
  rownames(p) <- tips
  phytools::fitMk(tree, p, fixedQ = Q, pi = c(mu, lam) / (lam + mu))$logLik
}
# P(fewer than k observed presences among x's known cells).
p_below <- function(x, k, a, b) {
  known <- which(!is.na(x))
  sets <- unlist(lapply(0:(k - 1), function(j)
    if (j == 0) list(integer(0)) else combn(known, j, simplify = FALSE)),
    recursive = FALSE)
  sum(vapply(sets, function(s) {
    y <- ifelse(is.na(x), NA, 0)
    y[s] <- 1
    exp(fitmk_err(y, a, b))
  }, 0))
}
set.seed(7)
fams <- pam[c(2, 77, 200, 256, 257:260, sample(3:255, 16)), ]
ea <- c(t1 = 0.1, t4 = 0.2, t7 = 0.05)
ep <- c(t2 = 0.03, t4 = 0.01, t8 = 0.1)
a8 <- setNames(rep(0, 8), tips)
b8 <- a8
a8[names(ea)] <- ea
b8[names(ep)] <- ep
err_lnl <- apply(fams, 1, fitmk_err, a = a8, b = b8)
err_p0 <- apply(fams, 1, function(x)
  exp(fitmk_err(ifelse(is.na(x), NA, 0), a8, b8)))
err_p1 <- apply(fams, 1, function(x)
  exp(fitmk_err(ifelse(is.na(x), NA, 1), a8, b8)))
err_oracle <- list(none = err_lnl, present = err_lnl - log1p(-err_p0),
                   variable = err_lnl - log1p(-err_p0 - err_p1))
for (cond in conditions)
  check(paste("error per genome vs fitMk with error partials,", cond),
        persiste_loglik(lab, fams, lam, mu, cond, by_family = TRUE,
                        error_absent = ea, error_present = ep),
        err_oracle[[cond]], 1e-12)

# 4d. min_present: PRESENT with k divides by P(at least k observed
# presences among the known cells), here with a global error pair too.
for (k in 2:3) {
  many <- fams[rowSums(fams == 1, na.rm = TRUE) >= k, ]
  a_k <- rep(0.1, 8)
  b_k <- rep(0.02, 8)
  below <- apply(many, 1, p_below, k = k, a = a_k, b = b_k)
  check(sprintf("min_present %d vs fitMk sums over the counts below %d", k,
                k),
        persiste_loglik(lab, many, lam, mu, "present", by_family = TRUE,
                        min_present = k, error_absent = 0.1,
                        error_present = 0.02),
        apply(many, 1, fitmk_err, a = a_k, b = b_k) - log1p(-below), 1e-12)
}

# 4e. Gamma categories: the rates from R's own qgamma/pgamma (Yang 1994),
# and each family's likelihood the mean over categories of plain calls at
# the rates scaled by each category's rate.
yang_rates <- function(alpha, k, median = FALSE) {
  if (median) {
    r <- qgamma((2 * seq_len(k) - 1) / (2 * k), alpha, alpha)
    return(r / mean(r))
  }
  q <- qgamma(seq_len(k - 1) / k, alpha, alpha)
  k * diff(c(0, pgamma(alpha * q, alpha + 1), 1))
}
for (g in list(c(0.3, 4, 0), c(1.7, 6, 0), c(0.8, 3, 1), c(0.01, 8, 0),
               c(50, 5, 1), c(50, 64, 0), c(1e4, 16, 0))) {
  check(sprintf("gamma rates (alpha %g, %d categories%s) vs qgamma/pgamma",
                g[1], g[2], if (g[3]) ", median" else ""),
        persiste_gamma_rates(g[1], g[2], g[3] == 1),
        yang_rates(g[1], g[2], g[3] == 1), 1e-11)
}
zeros <- ifelse(is.na(fams), NA, 0)
rownames(zeros) <- rownames(fams)
for (g in list(list(0.6, 4, FALSE), list(2, 3, TRUE))) {
  r <- yang_rates(g[[1]], g[[2]], g[[3]])
  lik <- sapply(r, function(x) exp(persiste_loglik(
    lab, fams, lam * x, mu * x, "none", by_family = TRUE)))
  p0 <- sapply(r, function(x) exp(persiste_loglik(
    lab, zeros, lam * x, mu * x, "none", by_family = TRUE,
    drop_absent = FALSE)))
  oracle <- list(none = log(rowMeans(lik)),
                 present = log(rowMeans(lik)) - log(rowMeans(1 - p0)))
  for (cond in names(oracle))
    check(sprintf("gamma alpha %g, %d categories%s = mean of plain calls, %s",
                  g[[1]], g[[2]], if (g[[3]]) " (median)" else "", cond),
          persiste_loglik(lab, fams, lam, mu, cond, by_family = TRUE,
                          gamma_alpha = g[[1]], categories = g[[2]],
                          gamma_median = g[[3]]),
          oracle[[cond]], 1e-12)
}

# At alpha 0.001 the lowest rates underflow (persiste.R raises them to
# 1e-250): a family with both states then owes its likelihood to the
# categories that can change (rate above 1e-40); the others add ~0.
r <- yang_rates(0.001, 4)
mixed <- fams[rowSums(fams == 1, na.rm = TRUE) > 0 &
                rowSums(fams == 0, na.rm = TRUE) > 0, ]
lik <- sapply(r[r > 1e-40], function(x) exp(persiste_loglik(
  lab, mixed, lam * x, mu * x, "none", by_family = TRUE)))
check("gamma alpha 0.001 (rates underflowing to 0) = mean of plain calls",
      persiste_loglik(lab, mixed, lam, mu, "none", by_family = TRUE,
                      gamma_alpha = 0.001, categories = 4),
      log(rowSums(as.matrix(lik)) / 4), 1e-12)

# 4f. Lineage multipliers equal to both rates scale the branch lengths of
# the clade: the same Newick with those lengths multiplied.
scaled <- function(by) {
  len <- lab_len
  for (b in names(by)) len[b] <- len[b] * by[[b]]
  lab_newick(len)
}
for (cond in conditions) {
  check(paste("lineage x1.7 on the root's clade = all lengths x1.7,", cond),
        persiste_loglik(lab, pam, lam, mu, cond, by_family = TRUE,
                        lineage = data.frame(node = "t2,t8", gain = 1.7,
                                             loss = 1.7)),
        persiste_loglik(lab_newick(lab_len * 1.7), pam, lam, mu, cond,
                        by_family = TRUE), 1e-12)
  rows <- data.frame(node = c("cl", "t6,t7", "t7", "t1"),
                     gain = c(2, 0.5, 3, 0.25), loss = c(2, 0.5, 3, 0.25))
  check(paste("lineage rows cl x2, (t6,t7) x0.5, t7 x3, t1 x0.25 =",
              "scaled Newick,", cond),
        persiste_loglik(lab, pam, lam, mu, cond, by_family = TRUE,
                        lineage = rows),
        persiste_loglik(scaled(c(cl = 2, t3 = 2, t4 = 2, t5 = 2, c67 = 0.5,
                                 t6 = 0.5, t7 = 3, t1 = 0.25)),
                        pam, lam, mu, cond, by_family = TRUE), 1e-12)
  rows$node[2] <- "c67"
  check(paste("lineage node 'c67' (label) = 't6,t7' (common ancestor),",
              cond),
        persiste_loglik(lab, pam, lam, mu, cond, by_family = TRUE,
                        lineage = rows),
        persiste_loglik(scaled(c(cl = 2, t3 = 2, t4 = 2, t5 = 2, c67 = 0.5,
                                 t6 = 0.5, t7 = 3, t1 = 0.25)),
                        pam, lam, mu, cond, by_family = TRUE), 1e-12)
}

# 4g. Derivatives of the model's parameters against central differences of
# persiste_loglik (total, condition present, every option at once).
opts <- list(error_absent = c(t1 = 0.1, t4 = 0.2), error_present =
               c(t4 = 0.03, t8 = 0.1), gamma_alpha = 0.8, categories = 4,
             lineage = data.frame(node = c("cl", "t6,t7"), gain = c(2, 0.5),
                                  loss = c(0.7, 1.5)))
total <- function(o, gain = lam, loss = mu)
  do.call(persiste_loglik, c(list(lab, fams, gain, loss, "present"), o))
g <- do.call(persiste_gradient, c(list(lab, fams, lam, mu, "present"), opts))
h_step <- 1e-5
# Central difference of the total in log(x), x = element i of option what
# (of its column col for the lineage).
fd_opt <- function(what, i = 1, col = NULL) {
  moved <- function(f) {
    o <- opts
    if (is.null(col)) {
      o[[what]][i] <- o[[what]][i] * f
    } else {
      o[[what]][[col]][i] <- o[[what]][[col]][i] * f
    }
    total(o)
  }
  (moved(exp(h_step)) - moved(exp(-h_step))) / (2 * h_step)
}
got <- c(g$d_log_gain, g$d_log_loss, g$d_log_error_absent[c("t1", "t4")],
         g$d_log_error_present[c("t4", "t8")], g$d_log_gamma_alpha,
         g$d_log_lineage_gain, g$d_log_lineage_loss)
e <- exp(h_step)
want <- c((total(opts, lam * e) - total(opts, lam / e)) / (2 * h_step),
          (total(opts, lam, mu * e) - total(opts, lam, mu / e)) /
            (2 * h_step),
          fd_opt("error_absent", "t1"), fd_opt("error_absent", "t4"),
          fd_opt("error_present", "t4"), fd_opt("error_present", "t8"),
          fd_opt("gamma_alpha"),
          fd_opt("lineage", 1, "gain"), fd_opt("lineage", 2, "gain"),
          fd_opt("lineage", 1, "loss"), fd_opt("lineage", 2, "loss"))
check(paste("d/dlog of rates, error pairs, gamma alpha, lineage rows vs",
            "central differences"), got, want, 1e-6)
check("gradient names: genomes and lineage rows",
      as.numeric(!identical(c(names(g$d_log_error_absent),
                              names(g$d_log_lineage_gain)),
                            c(tips, "cl", "t6,t7"))), 0, 0, rel = FALSE)
check("every option, 1 thread = 2 threads (bitwise)",
      as.numeric(!identical(
        do.call(persiste_loglik, c(list(lab, pam, lam, mu, by_family = TRUE,
                                        threads = 1), opts)),
        do.call(persiste_loglik, c(list(lab, pam, lam, mu, by_family = TRUE,
                                        threads = 2), opts)))),
      0, 0, rel = FALSE)

# 4h. The fit: families outside the event are excluded and named (counted
# from the table), the options held fixed, and scale invariance: a
# multiplier m on both rates of every branch gives the plain fit's rates
# divided by m.
n_pres <- rowSums(pam == 1, na.rm = TRUE)
n_abs <- rowSums(pam == 0, na.rm = TRUE)
f3 <- persiste_fit(lab, pam, min_present = 3)
check("fit, min_present 3: excluded = families with 1 or 2 presences",
      as.numeric(!identical(f3$excluded,
                            rownames(pam)[n_pres >= 1 & n_pres < 3])),
      0, 0, rel = FALSE)
check("fit, min_present 3: n_families = those with 3 or more",
      f3$n_families, sum(n_pres >= 3), 0, rel = FALSE)
check("fit, min_present 3: lnL = persiste_loglik at the estimates",
      f3$loglik, persiste_loglik(lab, pam, f3$gain, f3$loss,
                                 min_present = 3, drop_unobservable = TRUE),
      1e-13)
fv <- persiste_fit(lab, pam, "variable")
check("fit, variable: excluded = families without both 0 and 1",
      as.numeric(!identical(fv$excluded,
                            rownames(pam)[n_pres >= 1 & n_abs == 0])),
      0, 0, rel = FALSE)
check("fit, present: nothing excluded",
      length(persiste_fit(lab, pam)$excluded), 0, 0, rel = FALSE)
d <- persiste_dims(lab, pam, condition = "variable", drop_unobservable = TRUE)
check("persiste_dims, variable: the same excluded families",
      as.numeric(!identical(d$excluded, fv$excluded)), 0, 0, rel = FALSE)
f0 <- persiste_fit(lab, pam)
fm <- persiste_fit(lab, pam, lineage = data.frame(node = "t1,t8", gain = 2.5,
                                                  loss = 2.5))
check("fit with every branch x2.5: rates = plain fit / 2.5",
      c(fm$gain, fm$loss), c(f0$gain, f0$loss) / 2.5, 1e-5)
check("fit with every branch x2.5: same lnL", fm$loglik, f0$loglik, 1e-12)
fe <- persiste_fit(lab, pam, error_absent = ea, error_present = ep)
check("fit with fixed per-genome error: lnL = persiste_loglik there",
      fe$loglik, persiste_loglik(lab, pam, fe$gain, fe$loss,
                                 error_absent = ea, error_present = ep),
      1e-13)
check("fit with fixed per-genome error: gradient ~ 0", fe$gradient,
      c(0, 0), 1e-4, rel = FALSE)

# Estimating error_absent and gamma alpha on harris2022: the estimate is a
# local maximum (every coordinate moved either way lowers lnL).
fh <- persiste_fit(h_tree, h_pam, error_absent = 0.02, gamma_alpha = 1,
                   estimate = c("error_absent", "gamma_alpha"))
cat(sprintf(paste("     harris2022 fit: gain %.6f, loss %.6f, error_absent",
                  "%.6f, alpha %.6f, lnL %.4f (%s)\n"),
            fh$gain, fh$loss, fh$error_absent, fh$gamma_alpha, fh$loglik,
            fh$message))
at_h <- function(x) persiste_loglik(
  h_tree, h_pam, exp(x[1]), exp(x[2]), error_absent = plogis(x[3]),
  gamma_alpha = exp(x[4]), drop_unobservable = TRUE)
x_hat <- c(log(fh$gain), log(fh$loss), qlogis(fh$error_absent),
           log(fh$gamma_alpha))
check("harris2022 fit with error and gamma: lnL = persiste_loglik there",
      fh$loglik, at_h(x_hat), 1e-13)
moved <- unlist(lapply(1:4, function(i) lapply(c(-1e-3, 1e-3), function(s)
  at_h(replace(x_hat, i, x_hat[i] + s)))))
check("harris2022 fit with error and gamma: a local maximum (8 moves)",
      as.numeric(moved > fh$loglik), rep(0, 8), 0, rel = FALSE)

# 4i. Bad options: R errors naming the genome, node or the library's rule.
check_error("error rate for a genome not in the tree",
            persiste_loglik(lab, pam, 1, 1,
                            error_absent = c(t1 = 0.1, nope = 0.2)),
            c("error_absent", "not in the tree", "nope"))
check_error("negative error rate (library message, genome named)",
            persiste_loglik(lab, pam, 1, 1, error_absent = c(t4 = -0.1)),
            c("error pair 3 (genome t4)", "absent -0.1",
              "expected each in [0, 1) with a sum below 1"))
check_error("error pair with a + b >= 1 (library message)",
            persiste_loglik(lab, pam, 1, 1, error_absent = 0.6,
                            error_present = 0.4),
            c("error pair 0", "absent 0.6, present 0.4", "sum below 1"))
check_error("error rates as an unnamed vector",
            persiste_loglik(lab, pam, 1, 1, error_absent = c(0.1, 0.2)),
            c("error_absent", "named by genome"))
check_error("lineage node not in the tree",
            persiste_loglik(lab, pam, 1, 1,
                            lineage = data.frame(node = "nope", gain = 2,
                                                 loss = 2)),
            c("lineage", "'nope'", "neither a tip nor an internal label"))
check_error("lineage common ancestor of an unknown tip",
            persiste_loglik(lab, pam, 1, 1,
                            lineage = data.frame(node = "t1, t9", gain = 2,
                                                 loss = 2)),
            c("lineage", "'t9' is not a tip"))
check_error("lineage multiplier 0",
            persiste_loglik(lab, pam, 1, 1,
                            lineage = data.frame(node = c("t1", "cl"),
                                                 gain = c(2, 0), loss = 1)),
            c("lineage: row 2 (node 'cl')", "> 0"))
check_error("min_present 2 without conditioning (library message)",
            persiste_loglik(lab, pam, 1, 1, "none", min_present = 2),
            c("min_present 2 needs conditioning on presence",
              "condition = \"present\""))
check_error("min_present above the number of tips (library message)",
            persiste_loglik(lab, pam, 1, 1, min_present = 9),
            c("min_present 9 exceeds the tree's 8 tips"))
check_error("gamma alpha 0 (library message)",
            persiste_loglik(lab, pam, 1, 1, gamma_alpha = 0),
            c("gamma: alpha = 0", "[1e-3, 1e4]"))
check_error("65 gamma categories (library message)",
            persiste_loglik(lab, pam, 1, 1, gamma_alpha = 1,
                            categories = 65), c("gamma", "65"))
check_error("estimate of an unknown option",
            persiste_fit(lab, pam, estimate = "loss_mult"),
            c("estimate", "error_absent"))
# Outputs are sized from an earlier read: a different count is an error,
# not an overrun.
inputs <- .persiste_inputs(lab, pam, FALSE, TRUE, FALSE)
m <- .persiste_model(inputs)
check_error("outputs sized for another table",
            .persiste_eval(inputs, m, list(n_families = 3L,
                                           families = letters[1:3]),
                           1, 1, FALSE, 1L),
            c("the data has 259 families where R expected 3"))

## 5. Reconstruction ------------------------------------------------------
# Posterior presence per node and expected gains and losses per branch
# against values computed here: the two-tip tree by hand and every
# assignment of true states on eight tips, with the endpoint-conditioned
# expectations by numerical integration; sums against the per-family
# values; ape's edge order against the phylo object itself.

# Expected gains (kind "gain") or losses on a branch of length t with rates
# g, l given the states at its top (i) and bottom (j) (0/1):
#   g * integral_0^t P_i0(u) P_1j(t - u) du / P_ij(t)
#   l * integral_0^t P_i1(u) P_0j(t - u) du / P_ij(t)
cond_expect <- function(t, i, j, g, l, kind) {
  from <- if (kind == "gain") 1 else 2
  to <- 3 - from
  f <- function(u) vapply(u, function(s)
    p_branch(s, g, l)[i + 1, from] * p_branch(t - s, g, l)[to, j + 1], 0)
  r <- if (kind == "gain") g else l
  r * integrate(f, 0, t, rel.tol = 1e-13, abs.tol = 0)$value /
    p_branch(t, g, l)[i + 1, j + 1]
}
# sum over (i, j) of joint[i, j] * the expectation given (i, j)
weigh <- function(joint, t, g, l, kind)
  sum(vapply(0:3, function(k) joint[k %/% 2 + 1, k %% 2 + 1] *
               cond_expect(t, k %/% 2, k %% 2, g, l, kind), 0))

# 5a. Two tips (A:0.3, B:0.7) by hand, per family: the root posterior
# pi_r P_ra P_rb / L (tip partials with error), the joint posterior of a
# branch's endpoints pi_r P_rj(t) partial_j (P partial)_other(r) / L, the
# categories mixed by pi_k L_k (as the library's category weights).
two_rec <- function(x, a = c(0, 0), b = c(0, 0),
                    mult = list(c(1, 1), c(1, 1)), rate = 1) {
  len <- c(0.3, 0.7)
  root <- c(mu2, lam2) / (lam2 + mu2)
  part <- lapply(1:2, function(i) tip_partial(x[i], a[i], b[i]))
  per_cat <- lapply(rate, function(k) {
    g <- lam2 * k * c(mult[[1]][1], mult[[2]][1])
    l <- mu2 * k * c(mult[[1]][2], mult[[2]][2])
    P <- lapply(1:2, function(i) p_branch(len[i], g[i], l[i]))
    below <- lapply(1:2, function(i) drop(P[[i]] %*% part[[i]]))
    L <- sum(root * below[[1]] * below[[2]])
    # L x the joint posterior of (root state, tip i's true state)
    joint <- lapply(1:2, function(i)
      (root * below[[3 - i]]) * P[[i]] * rep(part[[i]], each = 2))
    c(L = L, present = c(sum(joint[[1]][, 2]), sum(joint[[2]][, 2]),
                         root[2] * below[[1]][2] * below[[2]][2]),
      gains = c(weigh(joint[[1]], len[1], g[1], l[1], "gain"),
                weigh(joint[[2]], len[2], g[2], l[2], "gain"), 0),
      losses = c(weigh(joint[[1]], len[1], g[1], l[1], "loss"),
                 weigh(joint[[2]], len[2], g[2], l[2], "loss"), 0))
  })
  s <- Reduce(`+`, per_cat)  # equal category weights
  s[-1] / s[["L"]]
}
gamma_r <- yang_rates(0.5, 3)
two_cases <- list(
  "plain" = list(list(), list()),
  "error pair (0.05, 0.01)" = list(
    list(error_absent = 0.05, error_present = 0.01),
    list(a = c(0.05, 0.05), b = c(0.01, 0.01))),
  "lineage on A (gain x2.5, loss x0.4), error on B" = list(
    list(lineage = data.frame(node = "A", gain = 2.5, loss = 0.4),
         error_absent = c(B = 0.1)),
    list(mult = list(c(2.5, 0.4), c(1, 1)), a = c(0, 0.1))),
  "gamma alpha 0.5, 3 categories" = list(
    list(gamma_alpha = 0.5, categories = 3), list(rate = gamma_r)))
for (cond in c("none", "present")) {
  for (case in names(two_cases)) {
    opts <- two_cases[[case]]
    r <- do.call(persiste_reconstruct,
                 c(list(two, two_pam, lam2, mu2, cond, per_family = TRUE),
                   opts[[1]]))
    # per family: p_present at A, B, root; gains A, B, root; losses ...
    got <- unlist(lapply(rownames(two_pam), function(f) {
      d <- r$per_family[r$per_family$family == f, ]
      c(d$p_present, d$expected_gains, d$expected_losses)
    }))
    want <- unlist(lapply(rownames(two_pam), function(f)
      do.call(two_rec, c(list(two_pam[f, ]), opts[[2]]))))
    check(paste0("reconstruction on two tips by hand, ", case, ", ", cond),
          got, unname(want), 1e-11, rel = FALSE)
  }
}

# 5b. Eight tips (section 2's tree): every assignment of true states to the
# 14 nodes, weighted by the root prior, the transition probabilities and
# the tip partials, gives each node's posterior and each branch's joint
# posterior of its endpoints; expectations by integrate() as above.
brute_rec <- function(phy, x, g, l, a = 0, b = 0) {
  nt <- length(phy$tip.label)
  n <- nt + phy$Nnode
  S <- as.matrix(expand.grid(rep(list(0:1), n)))
  root <- nt + 1L
  w <- ifelse(S[, root] == 1, g, l) / (g + l)
  for (e in seq_len(nrow(phy$edge))) {
    P <- p_branch(phy$edge.length[e], g, l)
    w <- w * P[cbind(S[, phy$edge[e, 1]] + 1, S[, phy$edge[e, 2]] + 1)]
  }
  for (t in seq_len(nt)) {
    part <- tip_partial(x[[phy$tip.label[t]]], a, b)
    w <- w * part[S[, t] + 1]
  }
  w <- w / sum(w)
  edge_exp <- function(kind) vapply(seq_len(nrow(phy$edge)), function(e) {
    p <- S[, phy$edge[e, 1]]
    c <- S[, phy$edge[e, 2]]
    joint <- matrix(c(sum(w[p == 0 & c == 0]), sum(w[p == 1 & c == 0]),
                      sum(w[p == 0 & c == 1]), sum(w[p == 1 & c == 1])), 2)
    weigh(joint, phy$edge.length[e], g, l, kind)
  }, 0)
  list(present = colSums(w * S), gains = edge_exp("gain"),
       losses = edge_exp("loss"))
}
some_rec <- fams[c(1, 3, 5, 6, 9, 17), ]  # unknown cells in two of them
for (err in list(c(0, 0), c(0.08, 0.02))) {
  r <- persiste_reconstruct(tree, some_rec, lam, mu, "none",
                            per_family = TRUE, error_absent = err[1],
                            error_present = err[2])
  got <- want <- NULL
  for (f in rownames(some_rec)) {
    d <- r$per_family[r$per_family$family == f, ]
    o <- brute_rec(tree, some_rec[f, ], lam, mu, err[1], err[2])
    child <- r$branches$child_node
    got <- c(got, d$p_present, d$expected_gains[child],
             d$expected_losses[child])
    want <- c(want, o$present, o$gains, o$losses)
  }
  check(sprintf(paste("reconstruction on eight tips vs all 2^14 state",
                      "assignments, error (%g, %g)"), err[1], err[2]),
        got, want, 1e-11, rel = FALSE)
}

# 5c. Sums and groups on the eight tips with every option: the sums over
# families are the per-family values summed, each group's sums those of
# its families, and the group columns add up to the totals.
grp <- setNames(rep(c("core", "mobile", "phage"), length.out = 20),
                rownames(fams)[1:20])  # the last four families unlisted
opts <- list(error_absent = c(t1 = 0.1, t4 = 0.2), error_present = 0.01,
             gamma_alpha = 0.8, categories = 4,
             lineage = data.frame(node = "t3,t4", gain = 2, loss = 0.7))
r <- do.call(persiste_reconstruct,
             c(list(tree, fams, lam, mu, groups = grp, per_family = TRUE,
                    threads = 1), opts))
pf <- r$per_family
in_group <- ifelse(pf$family %in% names(grp), grp[pf$family], "ungrouped")
br <- r$branches
n_nodes <- nrow(r$nodes)  # 14: 8 tips, 6 internal nodes (a polytomy)
node_sum <- function(col, keep = TRUE)
  as.vector(tapply(pf[[col]][keep], factor(pf$node[keep], 1:n_nodes), sum))
check("sums over families = per-family values summed (present, gains, losses)",
      c(r$nodes$expected_present, br$expected_gains, br$expected_losses),
      c(node_sum("p_present"), node_sum("expected_gains")[br$child_node],
        node_sum("expected_losses")[br$child_node]), 1e-12, rel = FALSE)
check("groups: core, mobile, phage, ungrouped (4 unlisted families)",
      as.numeric(!identical(r$groups$group,
                            c("core", "mobile", "phage", "ungrouped"))) +
        abs(r$groups$n_families - c(7, 7, 6, 4)), rep(0, 4), 0, rel = FALSE)
got <- want <- NULL
for (g in r$groups$group) {
  keep <- in_group == g
  got <- c(got, r$nodes[[paste0("present_", g)]], br[[paste0("gains_", g)]],
           br[[paste0("losses_", g)]])
  want <- c(want, node_sum("p_present", keep),
            node_sum("expected_gains", keep)[br$child_node],
            node_sum("expected_losses", keep)[br$child_node])
}
check("each group's columns = its families' per-family values summed",
      got, want, 1e-12, rel = FALSE)
cols <- function(d, what) as.matrix(d[paste0(what, "_", r$groups$group)])
check("group columns add up to the totals (present, gains, losses)",
      c(rowSums(cols(r$nodes, "present")), rowSums(cols(br, "gains")),
        rowSums(cols(br, "losses"))),
      c(r$nodes$expected_present, br$expected_gains, br$expected_losses),
      1e-12, rel = FALSE)
check("groups table = the columns' totals",
      c(r$groups$expected_gains, r$groups$expected_losses),
      c(colSums(cols(br, "gains")), colSums(cols(br, "losses"))), 1e-12,
      rel = FALSE)
r2 <- do.call(persiste_reconstruct,
              c(list(tree, fams, lam, mu, per_family = TRUE,
                     groups = data.frame(family = names(grp), group =
                                           factor(grp)), threads = 2), opts))
check("groups as a data.frame with a factor, 2 threads = vector, 1 thread",
      as.numeric(!c(identical(r2$branches, r$branches),
                    identical(r2$nodes, r$nodes),
                    identical(r2$per_family, r$per_family))),
      c(0, 0, 0), 0, rel = FALSE)
r0 <- do.call(persiste_reconstruct, c(list(tree, fams, lam, mu), opts))
check("without groups: the same totals, no group columns",
      c(r0$branches$expected_gains, r0$nodes$expected_present,
        ncol(r0$branches), ncol(r0$nodes)),
      c(br$expected_gains, r$nodes$expected_present, 8, 3), 1e-12,
      rel = FALSE)

# 5d. Edges in ape's order: the rows are phy$edge's, the child of a tip
# row is that tip, the child of another row the MRCA of its tip_a and
# tip_b; also for a phylo object reordered to post-order and a Newick
# whose children are written in the opposite order (another library
# numbering), compared by the descendant tips of each node.
edge_ok <- function(r, phy) {
  br <- r$branches
  nt <- length(phy$tip.label)
  tip <- br$child_node <= nt
  mrca <- mapply(function(x, y) ape::getMRCA(phy, c(x, y)),
                 br$tip_a[!tip], br$tip_b[!tip])
  c(identical(br$parent_node, phy$edge[, 1]),
    identical(br$child_node, phy$edge[, 2]),
    identical(br$label[tip], phy$tip.label[br$child_node[tip]]),
    all(br$tip_a[tip] == "" & br$tip_b[tip] == ""),
    identical(unname(mrca), br$child_node[!tip]),
    isTRUE(all.equal(br$length, phy$edge.length, tolerance = 1e-15)),
    identical(r$nodes$label[seq_len(nt)], phy$tip.label))
}
post <- ape::reorder.phylo(tree, "postorder")
mirror <- ape::read.tree(text = paste0(
  "((t8:1.2,(t7:0.001,t6:0.7):0.35):0.5,",
  "((t5:0.2,t4:0.6,t3:0.05):0.25,(t2:0.15,t1:0.3):0.4):0.1);"))
runs <- list(phylo = list(tree, tree), newick = list(nwk, tree),
             postorder = list(post, post), mirror = list(mirror, mirror))
recs <- lapply(runs, function(x)
  persiste_reconstruct(x[[1]], fams, lam, mu, groups = grp))
for (k in names(runs))
  check(paste("edges in ape's order, tips, MRCAs, lengths:", k),
        as.numeric(!edge_ok(recs[[k]], runs[[k]][[2]])), rep(0, 7), 0,
        rel = FALSE)
clade_key <- function(phy, v) {
  nt <- length(phy$tip.label)
  d <- if (v <= nt) v else phytools::getDescendants(phy, v)
  paste(sort(phy$tip.label[d[d <= nt]]), collapse = ",")
}
by_clade <- function(r, phy) {
  br <- r$branches
  key <- vapply(br$child_node, clade_key, "", phy = phy)
  br <- br[order(key), -(1:5)]  # drop the numbering-dependent columns
  rownames(br) <- NULL
  as.matrix(br)
}
check("the same branches by descendant tips: postorder, mirrored Newick",
      c(by_clade(recs$postorder, post), by_clade(recs$mirror, mirror)),
      rep(by_clade(recs$phylo, tree), 2), 1e-12, rel = FALSE)
check("Newick text = phylo object (bitwise)",
      as.numeric(!identical(recs$newick[1:4], recs$phylo[1:4])), 0, 0,
      rel = FALSE)
odd <- tree
odd$edge.length <- odd$edge.length * pi / 3 + 1e-12
check("a phylo object's branch lengths reach the library exactly",
      as.numeric(!identical(persiste_reconstruct(odd, fams, lam, mu)$
                              branches$length, odd$edge.length)), 0, 0,
      rel = FALSE)

# 5e. Rates: fitted when NULL (the same as at persiste_fit's estimates);
# one per family (the same as each family alone at its rates).
f0 <- persiste_fit(lab, fams)
ra <- persiste_reconstruct(lab, fams)
rb <- persiste_reconstruct(lab, fams, f0$gain, f0$loss)
check("gain, loss NULL: fitted (= reconstruction at persiste_fit's rates)",
      as.numeric(!c(identical(ra$branches, rb$branches),
                    identical(c(ra$gain, ra$loss), c(f0$gain, f0$loss)),
                    is.null(rb$fit), identical(ra$fit$loglik, f0$loglik))),
      c(0, 0, 0, 0), 0, rel = FALSE)
fa <- persiste_fit(lab, fams, gamma_alpha = 1, estimate = "gamma_alpha")
ra <- persiste_reconstruct(lab, fams, gamma_alpha = 1,
                           estimate = "gamma_alpha")
rb <- persiste_reconstruct(lab, fams, fa$gain, fa$loss,
                           gamma_alpha = fa$gamma_alpha)
check("estimate gamma_alpha: the fitted alpha is used",
      as.numeric(!identical(ra$branches, rb$branches)), 0, 0, rel = FALSE)
three <- fams[1:3, ]
rp <- persiste_reconstruct(lab, three, c(0.2, 1, 5), c(0.3, 4, 1),
                           per_family = TRUE)
alone <- do.call(rbind, lapply(1:3, function(i) persiste_reconstruct(
  lab, three[i, , drop = FALSE], c(0.2, 1, 5)[i], c(0.3, 4, 1)[i],
  per_family = TRUE)$per_family))
check("per-family rates = each family alone at its rates",
      unlist(rp$per_family[3:5]), unlist(alone[3:5]), 1e-14, rel = FALSE)
check("per-family rates named by family",
      as.numeric(!identical(names(rp$gain), rownames(three))), 0, 0,
      rel = FALSE)

# 5f. An impossible family (two genomes that differ, joined by branches of
# length 0): counted, zeros in per_family, left out of the sums.
zero <- "((B:0,C:0):0.1,A:0.3);"
zp <- rbind(ok1 = c(A = 1, B = 1, C = 1), bad = c(1, 1, 0),
            ok2 = c(0, 1, 1))
ri <- persiste_reconstruct(zero, zp, 0.5, 0.5, "none", per_family = TRUE)
rk <- persiste_reconstruct(zero, zp[c(1, 3), ], 0.5, 0.5, "none")
bad_rows <- ri$per_family[ri$per_family$family == "bad", 3:5]
check("impossible family: n_impossible 1, zeros, sums without it",
      c(ri$n_impossible, max(abs(unlist(bad_rows))),
        ri$branches$expected_gains, ri$nodes$expected_present),
      c(1, 0, rk$branches$expected_gains, rk$nodes$expected_present), 1e-14,
      rel = FALSE)

# 5g. Bad input: R errors.
rec_err <- function(...) persiste_reconstruct(tree, fams, lam, mu, ...)
check_error("groups: an unnamed vector",
            rec_err(groups = rep("a", nrow(fams))),
            c("groups", "named by family"))
check_error("groups: a data.frame without family/group columns",
            rec_err(groups = data.frame(name = rownames(fams), g = "a")),
            c("groups", "columns family and group"))
check_error("groups: numbers as groups",
            rec_err(groups = setNames(1:3, rownames(fams)[1:3])),
            c("groups", "character or factor"))
check_error("groups: an NA group",
            rec_err(groups = setNames(c("a", NA), rownames(fams)[1:2])),
            c("groups", rownames(fams)[2], "NA or empty group"))
check_error("groups: a family listed twice",
            rec_err(groups = setNames(c("a", "b"), rownames(fams)[c(1, 1)])),
            c("groups", rownames(fams)[1], "listed twice"))
check_error("groups: no family of the data listed",
            rec_err(groups = c(nope = "a")),
            c("groups", "no family of the data is listed"))
check_error("gain without loss", persiste_reconstruct(tree, fams, lam),
            c("gain and loss", "give both"))
check_error("estimate with given rates", rec_err(estimate = "gamma_alpha"),
            c("estimate", "only when gain and loss are fitted"))
spaced <- ape::read.tree(text = "(A:1,B:1);")
spaced$tip.label[1] <- "a b"
check_error("a phylo object whose tip labels write.tree rewrites",
            persiste_reconstruct(spaced, rbind(f = c(a_b = 1, B = 0)), 1, 1),
            c("ape and the library read different trees", "a_b"))
# Outputs sized from an earlier read: another count is an error, not an
# overrun.
inputs <- .persiste_inputs(lab, fams, FALSE, TRUE, FALSE)
m <- .persiste_model(inputs)
check_error("reconstruction outputs sized for another tree",
            .persiste_call("persiste_r_reconstruct",
                           c(inputs, .persiste_model_args(m)), 1L,
                           c(nrow(fams), 13L, 1L, 0L), 1L, 0, 0,
                           integer(nrow(fams)), 0, 0, 0,
                           double(13), double(13), double(13), 0L),
            c("24 families and 14 nodes where R expected 24 and 13"))

if (failures > 0L) {
  cat(failures, "check(s) failed\n")
  quit(status = 1)
}
cat("all checks passed\n")
