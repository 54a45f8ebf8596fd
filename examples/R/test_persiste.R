# Tests of the R wrappers against independent values: REFERENCE.md of both
# bundled datasets (IQ-TREE, phangorn, NumPy), and phytools::fitMk with a
# fixed Q on a small tree. Prints the agreement figures; exits 1 on failure.
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
p_absent <- exp(fitmk_loglik(rep(0, 8), lam, mu))
p_present <- exp(fitmk_loglik(rep(1, 8), lam, mu))
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

if (failures > 0L) {
  cat(failures, "check(s) failed\n")
  quit(status = 1)
}
cat("all checks passed\n")
