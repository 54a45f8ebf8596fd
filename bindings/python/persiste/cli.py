"""persiste command line: loglik, fit and test on a tree and a PAM."""
import argparse
import json
import math
import sys
import time

import numpy as np

from ._core import (Data, Engine, Model, PersisteError, Tree, lib, lineage_multipliers,
                    simulate, version)
from ._fit import retention_test

SHOW = 20  # names listed in the readable report before "... and N more"


class UsageError(Exception):
    """Bad input found by the CLI itself: one line, exit status 2."""


class Parser(argparse.ArgumentParser):
    def error(self, message):
        raise UsageError(message)


class Progress:
    """Iteration lines on stderr, once runs last longer than `delay` seconds."""

    def __init__(self, mode, label, delay=2.0):
        self.mode, self.label, self.delay = mode, label, delay
        self.t0 = self.last = time.monotonic()

    def __call__(self, iteration, loglik):
        now = time.monotonic()
        if self.mode == "always" or (self.mode == "auto" and now - self.t0 > self.delay
                                     and now - self.last > 1.0):
            print(f"persiste: {self.label}: iteration {iteration}, lnL {loglik:.4f}, "
                  f"{now - self.t0:.1f} s", file=sys.stderr, flush=True)
            self.last = now


def _number(text, zero_ok):
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and (value > 0 or zero_ok and value == 0)):
        kind = "non-negative" if zero_ok else "positive"
        raise argparse.ArgumentTypeError(f"must be a {kind} number, not {text!r}")
    return value


def positive(text):
    return _number(text, False)


def nonnegative(text):
    return _number(text, True)


def probability(text):
    value = _number(text, True)
    if value >= 1:
        raise argparse.ArgumentTypeError(f"must be a probability below 1, not {text!r}")
    return value


def count(text):
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, not {text!r}")
    return value


def model_options(p):
    """The model's options, shared by loglik, fit, test and simulate."""
    g = p.add_argument_group("model options")
    g.add_argument("--error-absent", type=probability, metavar="A",
                   help="probability that a genome reports a present family absent "
                        "(draft assemblies miss genes); one value for every genome")
    g.add_argument("--error-present", type=probability, metavar="B",
                   help="probability that a genome reports an absent family present "
                        "(contamination, annotation errors)")
    g.add_argument("--error-file", metavar="TSV",
                   help="per-genome error rates: lines genome<TAB>a<TAB>b "
                        "(genomes not listed: 0)")
    g.add_argument("--gamma-alpha", type=positive, metavar="X",
                   help="families evolve at different speeds: gamma-distributed rate "
                        "multipliers of shape X (mean 1)")
    g.add_argument("--categories", type=count, metavar="K",
                   help="gamma categories (default 4 with --gamma-alpha; fit and test "
                        "estimate alpha when --gamma-alpha is not given)")
    g.add_argument("--gamma-median", action="store_true",
                   help="each category's median rate (rescaled to mean 1) instead of its mean")
    g.add_argument("--min-present", type=count, metavar="K",
                   help="condition on at least K observed presences (with --condition present)")
    g.add_argument("--lineage-file", metavar="TSV",
                   help="lineage multipliers: lines node<TAB>gain_multiplier<TAB>"
                        "loss_multiplier; node is a tip or internal label, or two tips "
                        "joined by a comma (their common ancestor); it applies to that "
                        "branch and every branch below it")


def build_parser():
    common = Parser(add_help=False)
    common.add_argument("--tree", required=True, help="rooted Newick tree")
    common.add_argument("--pam", required=True,
                        help="Roary/Panaroo .Rtab or CSV/TSV 0/1 table (gzip allowed)")
    common.add_argument("--condition", choices=["none", "present", "variable"], default="present",
                        help="ascertainment: families present somewhere (default), "
                             "also not everywhere (variable), or none")
    common.add_argument("--drop-extra-taxa", action="store_true",
                        help="drop table genomes that are not tips of the tree (named in the report)")
    common.add_argument("--missing-as-unknown", action="store_true",
                        help="tree tips missing from the table are unknown in every family")
    common.add_argument("--min-branch-length", type=nonnegative, default=0.0, metavar="X",
                        help="evaluate shorter branches at length X (tree units)")
    model_options(common)
    common.add_argument("--threads", type=int, default=1, help="worker threads (0: all cores)")
    common.add_argument("--json", action="store_true", help="one JSON object on stdout")
    common.add_argument("--progress", choices=["auto", "always", "never"], default="auto",
                        help="progress on stderr (auto: for runs longer than 2 s)")
    p = Parser(prog="persiste", description="Gain/loss rates of gene families on a phylogeny.")
    p.add_argument("--version", action="version", version=f"persiste {version()}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    s = sub.add_parser("loglik", parents=[common], help="log-likelihood at given rates")
    s.add_argument("--gain", type=positive, required=True, help="gain rate (0 -> 1)")
    s.add_argument("--loss", type=positive, required=True, help="loss rate (1 -> 0)")
    s.add_argument("--per-family", metavar="OUT.tsv",
                   help="write family, loglik, d_log_gain, d_log_loss per family")
    s = sub.add_parser("fit", parents=[common], help="maximum-likelihood gain and loss rates")
    fit_options(s)
    s = sub.add_parser("test", parents=[common],
                       help="retention test: do the listed families have a lower loss rate?")
    fit_options(s)
    s.add_argument("--families", required=True, metavar="FILE",
                   help="family names, one per line ('#' starts a comment)")
    s.add_argument("--alternative", choices=["less", "greater", "two-sided"], default="less",
                   help="loss multiplier of the listed families < 1 (retained, default), "
                        "> 1, or either")
    s.add_argument("--bootstrap", type=count, metavar="N",
                   help="also a parametric bootstrap p-value from N tables simulated "
                        "under the null fit (for small data)")
    s.add_argument("--seed", type=int, default=1, help="seed of the bootstrap (default 1)")
    s = sub.add_parser("reconstruct", parents=[common],
                       help="where on the tree the families were gained and lost")
    s.add_argument("--gain", type=positive, help="gain rate (default: fitted first)")
    s.add_argument("--loss", type=positive, help="loss rate (default: fitted first)")
    s.add_argument("--groups", metavar="TSV",
                   help="family groups: lines family<TAB>group (e.g. COG categories); "
                        "sums per group are added to the tables")
    s.add_argument("--per-family", action="store_true",
                   help="also write DIR/families.tsv.gz (family, node, P(present), "
                        "expected gains and losses on the branch above)")
    s.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (created; existing files are not overwritten)")
    fit_options(s)
    s = sub.add_parser("simulate", help="simulate a presence/absence table (Roary .Rtab)")
    s.add_argument("--tree", required=True, help="rooted Newick tree")
    s.add_argument("--gain", type=positive, required=True, help="gain rate (0 -> 1)")
    s.add_argument("--loss", type=positive, required=True, help="loss rate (1 -> 0)")
    s.add_argument("--families", type=count, required=True, metavar="N",
                   help="number of families")
    s.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    s.add_argument("--out", required=True, metavar="PAM.Rtab",
                   help="output table (refuses to overwrite an existing file)")
    s.add_argument("--condition", choices=["none", "present", "variable"], default="present",
                   help="keep only families observable under this conditioning "
                        "(rejection; default present)")
    s.add_argument("--root-prior", choices=["stationary", "fixed", "absent"],
                   default="stationary", help="root state: stationary (default), "
                   "fixed (--root-freq) or absent")
    s.add_argument("--root-freq", type=nonnegative, default=0.5,
                   help="P(root present) with --root-prior fixed")
    s.add_argument("--min-branch-length", type=nonnegative, default=0.0, metavar="X")
    model_options(s)
    s.add_argument("--json", action="store_true", help="one JSON object on stdout")
    return p


def fit_options(s):
    s.add_argument("--fit-error", nargs="?", const="global", choices=["global", "per-genome"],
                   help="also estimate the error rates: one global pair (default) or one "
                        "pair per genome")


def read_pairs(path, flag, n_values, convert):
    """Lines name<TAB>value... of a small TSV ('#' comments); errors name
    the file, line and column."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"{flag} {path}: cannot read: {e}") from None
    rows = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].rstrip("\r")
        if not text.strip():
            continue
        cells = text.split("\t")
        if len(cells) != 1 + n_values:
            raise UsageError(f"{flag} {path}, line {number}: expected {1 + n_values} "
                             f"tab-separated columns, found {len(cells)}")
        values = []
        for col, cell in enumerate(cells[1:], 2):
            try:
                values.append(convert(cell.strip()))
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise UsageError(f"{flag} {path}, line {number}, column {col}: {e}") from None
        rows.append((cells[0].strip(), *values))
    return rows


def make_model(args, tree, estimate_alpha=False):
    """The Model of the command's options."""
    if args.min_present and args.min_present > 1 and args.condition != "present":
        raise UsageError("--min-present needs --condition present")
    if args.error_file and (args.error_absent is not None or args.error_present is not None):
        raise UsageError("give either --error-file or --error-absent/--error-present")
    kw = dict(condition=args.condition, min_branch_length=args.min_branch_length,
              min_present=args.min_present or 1, tree=tree)
    if getattr(args, "root_prior", None):
        kw.update(root_prior=args.root_prior, root_freq=args.root_freq)
    if args.error_file:
        rows = read_pairs(args.error_file, "--error-file", 2, probability)
        known = set(tree.tip_names)
        for name, *_ in rows:
            if name not in known:
                raise UsageError(f"--error-file {args.error_file}: genome '{name}' is not "
                                 f"a tip of the tree")
        kw["error_absent"] = {r[0]: r[1] for r in rows}
        kw["error_present"] = {r[0]: r[2] for r in rows}
    elif args.error_absent is not None or args.error_present is not None:
        kw["error_absent"] = args.error_absent or 0.0
        kw["error_present"] = args.error_present or 0.0
    if args.gamma_alpha is not None:
        kw.update(gamma_alpha=args.gamma_alpha, n_categories=args.categories or 4,
                  gamma_median=args.gamma_median)
    elif args.categories and args.categories > 1:
        if not estimate_alpha:
            raise UsageError("--categories K needs --gamma-alpha X here (fit and test "
                             "estimate alpha)")
        kw.update(gamma_alpha=1.0, n_categories=args.categories,
                  gamma_median=args.gamma_median)
    if args.lineage_file:
        rows = read_pairs(args.lineage_file, "--lineage-file", 2, positive)
        try:
            kw["lineage"] = lineage_multipliers(tree, [r for r in rows])
        except PersisteError as e:
            raise UsageError(f"--lineage-file {args.lineage_file}: {e.message}") from None
    try:
        return Model(**kw)
    except PersisteError as e:
        raise UsageError(e.message) from None


def read_family_list(path, data):
    """Names from a file; listed families dropped as all-absent are skipped."""
    known = set(data.family_names)
    dropped = set(data.dropped_families)
    names, skipped = [], []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"--families {path}: cannot read: {e}") from None
    for number, line in enumerate(lines, 1):
        name = line.split("#", 1)[0].strip()
        if not name:
            continue
        if name in dropped:
            skipped.append(name)
        elif name not in known:
            raise UsageError(f"--families {path}, line {number}: family '{name}' "
                             f"is not in the table")
        else:
            names.append(name)
    if not names:
        raise UsageError(f"--families {path}: no family of the table is listed")
    return names, skipped


CLI_OPTIONS = {"drop_extra_taxa=True": "--drop-extra-taxa",
               "missing_as_unknown=True": "--missing-as-unknown",
               "min_branch_length": "--min-branch-length"}


def input_error(path, e):
    """One line naming the file, with library options given as CLI options."""
    message = e.message
    for keyword, option in CLI_OPTIONS.items():
        message = message.replace(keyword, option)
    return UsageError(message if path in message else f"{path}: {message}")


def load(args):
    try:
        tree = Tree.read(args.tree)
    except PersisteError as e:
        raise input_error(args.tree, e) from None
    try:
        data = Data.read(tree, args.pam, drop_extra_taxa=args.drop_extra_taxa,
                         missing_as_unknown=args.missing_as_unknown,
                         drop_absent_families=False)
    except PersisteError as e:
        raise input_error(args.pam, e) from None
    estimate_alpha = args.command in ("fit", "test") or \
        (args.command == "reconstruct" and args.gain is None)
    model = make_model(args, tree, estimate_alpha)
    # families outside the conditioning event (all absent, also all present
    # under variable, fewer than k presences) are removed and reported
    n_before = len(data.dropped_families)
    kept = data.observable(model)
    excluded = kept.dropped_families[n_before:]
    data.close()
    data = kept
    args.excluded = excluded
    args.fit_alpha = estimate_alpha and args.gamma_alpha is None and \
        (args.categories or 1) > 1
    if data.n_families == 0:
        raise UsageError(f"{args.pam}: no family left to analyse")
    return tree, data, Engine(tree, data, model=model, n_threads=args.threads)


def remedies(args):
    bigger = " larger than now" if args.min_branch_length else ""
    return [f"evaluate short branches at a minimum length{bigger}: --min-branch-length X "
            f"(e.g. 1e-6 in tree units)",
            "resolve the zero-length branches between differing genomes in the tree",
            "remove these families from the table"]


def summary(args, tree, data, impossible):
    return {"tree": args.tree, "pam": args.pam, "condition": args.condition,
            "n_families": data.n_families, "n_taxa": data.n_taxa, "n_tips": tree.n_tips,
            "dropped_taxa": data.dropped_taxa,
            "n_dropped_families": len(data.dropped_families),
            "dropped_families": data.dropped_families,
            "min_branch_length": args.min_branch_length,
            "n_impossible": len(impossible), "impossible_families": impossible,
            "remedies": remedies(args) if impossible else [],
            "n_excluded": len(args.excluded), "excluded": list(args.excluded)}


def model_line(info):
    """The model options in the report's model line."""
    out = []
    m = info.get("model", {})
    if m.get("min_present", 1) > 1:
        out.append(f"at least {m['min_present']} presences")
    for key, what in (("error_absent", "false absence"), ("error_present", "false presence")):
        v = m.get(key)
        if isinstance(v, dict):
            out.append(f"{what} per genome")
        elif v:
            out.append(f"{what} {v:.4g}")
    if m.get("n_categories", 1) > 1:
        alpha = m.get("alpha")
        out.append(f"{m['n_categories']} gamma categories"
                   + (f" (alpha {alpha:.4g})" if alpha else ""))
    if m.get("lineage"):
        out.append("lineage multipliers")
    return "".join(", " + x for x in out)


def model_settings(m, tree):
    return m.settings(tree)


def names_line(names):
    more = f" ... and {len(names) - SHOW} more (--json lists all)" if len(names) > SHOW else ""
    return ", ".join(names[:SHOW]) + more


def report_header(title, info):
    lines = [f"persiste {version()}: {title}",
             f"  tree      {info['tree']} ({info['n_tips']} tips)",
             f"  table     {info['pam']}: {info['n_families']} families x "
             f"{info['n_taxa']} genomes analysed",
             f"  model     condition '{info['condition']}', stationary root"
             + (f", min branch length {info['min_branch_length']:g}"
                if info["min_branch_length"] else "") + model_line(info)]
    if info["dropped_taxa"]:
        lines.append(f"  dropped   {len(info['dropped_taxa'])} table genome(s) not in the tree: "
                     + names_line(info["dropped_taxa"]))
    if info["n_excluded"]:
        lines.append(f"  excluded  {info['n_excluded']} families outside the conditioning "
                     f"event ('{info['condition']}'; never observable): "
                     + names_line(info["excluded"]))
    if info["n_impossible"]:
        lines += [f"  IMPOSSIBLE {info['n_impossible']} families have zero likelihood under the "
                  f"model (e.g. a zero-length branch between genomes that differ); they are "
                  f"left out of fits: " + names_line(info["impossible_families"]),
                  "  remedies: " + "; or ".join(info["remedies"])]
    return lines


def fmt_rate(fit, which):
    b, se = fit[f"log_{which}"], fit.se[fit.names.index(f"log_{which}")]
    lo, hi = np.exp(b - 1.96 * se), np.exp(b + 1.96 * se)
    return f"{np.exp(b):.6g}  (log {b:.5f} +/- {se:.5f}; 95% CI {lo:.4g} .. {hi:.4g})"


def fit_lines(fit, label):
    return [f"  {label}",
            f"    lnL         {fit.loglik:.6f}",
            f"    gain        {fmt_rate(fit, 'gain')}",
            f"    loss        {fmt_rate(fit, 'loss')}",
            f"    pi1         {fit.pi1:.6g}   (gain / (gain + loss))",
            f"    AIC         {fit.aic:.4f}",
            f"    evaluations {fit.n_evaluations}, "
            + ("converged" if fit.converged else f"NOT CONVERGED: {fit.message}")]


def cmd_loglik(args, tree, data, engine):
    g = engine.gradient(math.log(args.gain), math.log(args.loss))
    impossible = [data.family_names[i] for i in np.flatnonzero(np.isneginf(g.loglik))]
    if args.per_family:
        try:
            with open(args.per_family, "w", encoding="utf-8") as f:
                f.write("family\tloglik\td_log_gain\td_log_loss\n")
                for row in zip(data.family_names, g.loglik, g.d_log_gain, g.d_log_loss):
                    f.write("%s\t%.17g\t%.17g\t%.17g\n" % row)
        except OSError as e:
            raise UsageError(f"--per-family {args.per_family}: {e.strerror}") from None
    info = summary(args, tree, data, impossible)
    info["model"] = model_settings(engine.model, tree)
    total = float(g.loglik.sum())
    possible = np.isfinite(g.loglik)
    out = dict(info, loglik=total, gain=args.gain, loss=args.loss,
               **{k: v for k, v in info["model"].items() if k != "lineage"},
               se_logit_error_absent=None, se_logit_error_present=None, se_log_alpha=None,
               pi1=args.gain / (args.gain + args.loss),
               d_log_gain=float(g.d_log_gain[possible].sum()),
               d_log_loss=float(g.d_log_loss[possible].sum()),
               loglik_possible=float(g.loglik[possible].sum()))
    lines = report_header("log-likelihood", info) + [
        f"  rates     gain {args.gain:g}, loss {args.loss:g}, pi1 {out['pi1']:.6g}",
        f"  lnL       {total:.10f}" + (
            f"  (-inf: impossible families; {out['loglik_possible']:.10f} over the "
            f"{int(possible.sum())} possible ones)" if impossible else ""),
        f"  gradient  d lnL/d log gain {out['d_log_gain']:.6g}, "
        f"d lnL/d log loss {out['d_log_loss']:.6g}"
        + (f" (over the {int(possible.sum())} possible families)" if impossible else "")]
    return out, lines


def model_fit_lines(fit):
    """Report lines of the model parameters a fit estimated."""
    lines = []
    for key, label in (("error_absent", "false absence a"),
                       ("error_present", "false presence b")):
        i = [j for j, n in enumerate(fit.names) if n.startswith(f"logit_{key}")]
        if len(i) == 1:
            v, se = fit.coef[i[0]], fit.se[i[0]]
            lines.append(f"    {label:<17}{1 / (1 + np.exp(-v)):.6g}  (logit {v:.5f} +/- "
                         f"{se:.5f})")
        elif i:
            a = 1 / (1 + np.exp(-fit.coef[i]))
            lines.append(f"    {label:<17}per genome: median {np.median(a):.4g}, "
                         f"range {a.min():.4g} .. {a.max():.4g}")
    if "log_alpha" in fit.names:
        j = fit.names.index("log_alpha")
        lines.append(f"    gamma alpha      {np.exp(fit.coef[j]):.6g}  (log {fit.coef[j]:.5f} "
                     f"+/- {fit.se[j]:.5f})")
    return lines


def fit_kwargs(args):
    return dict(fit_error=args.fit_error, fit_alpha=args.fit_alpha)


def cmd_fit(args, tree, data, engine):
    fit = engine.fit(progress=Progress(args.progress, "fit"), **fit_kwargs(args))
    info = summary(args, tree, data, fit.impossible)
    info["model"] = dict(model_settings(engine.model, tree), **{
        k: v for k, v in fit.model_dict().items() if not k.startswith("se_")})
    out = dict(info, **fit.to_dict())
    lines = report_header("maximum-likelihood fit (one gain and one loss rate)", info)
    lines += fit_lines(fit, f"fit on {fit.n_fitted} families (rates per unit branch length)")
    lines[-1:-1] = model_fit_lines(fit)
    return out, lines


def cmd_test(args, tree, data, engine):
    names, skipped = read_family_list(args.families, data)
    res = retention_test(engine, names, alternative=args.alternative,
                         progress=Progress(args.progress, "test"), bootstrap=args.bootstrap or 0,
                         seed=args.seed, **fit_kwargs(args))
    null, alt = res.null, res.alt
    mult, lo, hi = alt.effects()["loss:set"]
    info = summary(args, tree, data, null.impossible)
    info["model"] = dict(model_settings(engine.model, tree), **{
        k: v for k, v in null.model_dict().items() if not k.startswith("se_")})
    out = dict(info, loglik=null.loglik, gain=null.gain, loss=null.loss, pi1=null.pi1,
               se_log_gain=null.se_log_gain, se_log_loss=null.se_log_loss,
               **null.model_dict(),
               n_listed=len(names), listed_absent_skipped=skipped,
               loss_multiplier={"estimate": mult, "ci95": [lo, hi]},
               alternative=args.alternative, **res.to_dict())
    how = {"less": "one-sided (multiplier < 1), chi-bar-square 50:50 mixture",
           "greater": "one-sided (multiplier > 1), chi-bar-square 50:50 mixture",
           "two-sided": "two-sided, chi-square"}[args.alternative]
    verdict = ("lost more slowly than the rest: retained" if hi < 1 else
               "lost faster than the rest" if lo > 1 else
               "no loss-rate difference resolved at 95%")
    lines = report_header(f"retention test of {len(names)} listed families", info)
    if skipped:
        lines.append(f"  skipped   {len(skipped)} listed families absent from every genome: "
                     + names_line(skipped))
    lines += fit_lines(null, "null: one gain and one loss rate for all families")
    lines += fit_lines(alt, "alternative: the listed families have their own loss rate")
    lines += [f"    loss multiplier of the listed families {mult:.4g} "
              f"(95% CI {lo:.4g} .. {hi:.4g}): {verdict}",
              "  likelihood-ratio test",
              f"    delta lnL   {res.delta_loglik:.6f}   (statistic {res.statistic:.4f}, "
              f"df {res.df})",
              f"    p-value     {res.p_value:.4g}   ({how})" if res.p_value > 0 else
              f"    p-value     < 1e-300   ({how})",
              f"    AIC         null {null.aic:.4f}, alternative {alt.aic:.4f}"]
    if res.bootstrap:
        bs = res.bootstrap
        lines.append(f"    bootstrap   p = {bs['p_value']:.4g} from {bs['n']} tables simulated "
                     f"under the null (seed {bs['seed']})")
    if res.one_sided and res.statistic == 0 and res.delta_loglik > 0:
        lines.append("    (statistic 0: the multiplier lies on the other side of 1 than "
                     "--alternative; --alternative two-sided tests either side)")
    return out, lines


def cmd_simulate(args):
    """Writes a Roary-style .Rtab of simulated families (never overwrites)."""
    try:
        tree = Tree.read(args.tree)
    except PersisteError as e:
        raise input_error(args.tree, e) from None
    model = make_model(args, tree)
    states = simulate(model, tree, args.families, args.gain, args.loss, args.seed)
    width = len(str(args.families))
    try:
        with open(args.out, "x", encoding="utf-8") as f:
            f.write("Gene\t" + "\t".join(tree.tip_names) + "\n")
            for i, row in enumerate(states):
                f.write(f"family_{i + 1:0{width}d}\t" + "\t".join(map(str, row)) + "\n")
    except FileExistsError:
        raise UsageError(f"--out {args.out}: the file exists (not overwritten)") from None
    except OSError as e:
        raise UsageError(f"--out {args.out}: {e.strerror}") from None
    out = {"out": args.out, "n_families": args.families, "n_tips": tree.n_tips,
           "gain": args.gain, "loss": args.loss, "seed": args.seed,
           "condition": args.condition, **model_settings(model, tree)}
    lines = [f"persiste {version()}: simulated {args.families} families x {tree.n_tips} "
             f"genomes (gain {args.gain:g}, loss {args.loss:g}, seed {args.seed}) "
             f"-> {args.out}"]
    return out, lines


def _cell(x):
    """A TSV cell: numbers in full precision, names without tabs/newlines."""
    if isinstance(x, (float, np.floating)):
        return repr(float(x))
    return str(x).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def write_tsv(path, columns, opener=open):
    """Columns (a dict of equal-length sequences) to path, written to a
    temporary file beside it and renamed, so that a failure leaves nothing
    half-written."""
    import os
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with opener(tmp, "wt", encoding="utf-8") as f:
            names = list(columns)
            f.write("\t".join(names) + "\n")
            for row in zip(*(columns[c] for c in names)):
                f.write("\t".join(_cell(x) for x in row) + "\n")
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise UsageError(f"{path}: {e.strerror}") from None


UNGROUPED = "ungrouped"


def read_groups(path, data):
    rows = read_pairs(path, "--groups", 1, str)
    where = {name: i for i, name in enumerate(data.family_names)}
    groups = [None] * data.n_families
    for name, group in rows:
        if name in where:
            groups[where[name]] = group
    if not any(g is not None for g in groups):
        raise UsageError(f"--groups {path}: no family of the table is listed")
    # the totals cover every family: the unlisted ones form a group too
    return [UNGROUPED if g is None else g for g in groups]


def cmd_reconstruct(args, tree, data, engine):
    import os
    out_dir = args.out
    files = {"branches": os.path.join(out_dir, "branches.tsv"),
             "nodes": os.path.join(out_dir, "nodes.tsv"),
             "tree_svg": os.path.join(out_dir, "tree.svg"),
             "tree_png": os.path.join(out_dir, "tree.png")}
    if args.per_family:
        files["families"] = os.path.join(out_dir, "families.tsv.gz")
    if args.groups:
        files["groups_png"] = os.path.join(out_dir, "groups.png")
    inputs = {os.path.realpath(p) for p in (args.tree, args.pam)}
    for p in files.values():
        if os.path.exists(p):
            raise UsageError(f"--out {out_dir}: {p} exists (not overwritten)")
        if os.path.realpath(p) in inputs:
            raise UsageError(f"--out {out_dir}: {p} is an input")
    groups = read_groups(args.groups, data) if args.groups else None
    fit = None
    if (args.gain is None) != (args.loss is None):
        raise UsageError("give both --gain and --loss, or neither (then they are fitted)")
    if args.gain is None:
        fit = engine.fit(progress=Progress(args.progress, "fit"), **fit_kwargs(args))
        lg, ll = fit["log_gain"], fit["log_loss"]
    else:
        lg, ll = math.log(args.gain), math.log(args.loss)
    rec = engine.reconstruct(lg, ll, per_family=args.per_family, groups=groups)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {out_dir}: {e.strerror}") from None
    write_tsv(files["branches"], rec.branches())
    write_tsv(files["nodes"], rec.nodes())
    if args.per_family:
        import gzip
        nn = tree.n_nodes
        nf = data.n_families
        labels = rec.branches()["label"]
        write_tsv(files["families"], {
            "family": np.repeat(np.array(data.family_names, dtype=object), nn),
            "node": np.tile(np.array(labels, dtype=object), nf),
            "p_present": rec.present.reshape(-1), "expected_gains": rec.gains.reshape(-1),
            "expected_losses": rec.losses.reshape(-1)}, opener=gzip.open)
    rec.plot(os.path.join(out_dir, "tree"))
    if groups is not None:
        from .plot import plot_groups
        rec.group_sizes = {g: sum(1 for x in groups if x == g) for g in rec.groups}
        plot_groups(rec, files["groups_png"])
    info = summary(args, tree, data, [])
    info["model"] = model_settings(engine.model, tree)
    gains, losses = float(rec.sum_gains.sum()), float(rec.sum_losses.sum())
    out = dict(info, expected_gains_total=gains, expected_losses_total=losses,
               n_impossible=int(rec.n_impossible), files=files,
               gain=math.exp(lg), loss=math.exp(ll))
    if fit is not None:
        out["fit"] = fit.to_dict()
    branches = rec.branches()
    order = np.argsort(-branches["expected_gains"])[:5]
    if groups is not None:
        out["groups"] = {g: {"n_families": rec.group_sizes[g],
                             "expected_gains": float(rec.sum_gains[i].sum()),
                             "expected_losses": float(rec.sum_losses[i].sum())}
                         for i, g in enumerate(rec.groups)}
    lines = report_header("reconstruction of gains and losses", info)
    lines += [f"  rates     gain {math.exp(lg):.6g}, loss {math.exp(ll):.6g}"
              + (" (fitted)" if fit is not None else ""),
              f"  expected  {gains:.2f} gains and {losses:.2f} losses over the tree",
              *[f"  group     {g}: {v['n_families']} families, "
                f"{v['expected_gains']:.2f} gains, {v['expected_losses']:.2f} losses"
                for g, v in out.get("groups", {}).items()],
              "  branches with the most gains (node: gains, losses):"]
    for v in order:
        lines.append(f"    {branches['label'][v]}: {branches['expected_gains'][v]:.2f}, "
                     f"{branches['expected_losses'][v]:.2f}")
    lines.append("  wrote     " + ", ".join(files.values()))
    return out, lines


COMMANDS = {"loglik": cmd_loglik, "fit": cmd_fit, "test": cmd_test,
            "reconstruct": cmd_reconstruct}


def main(argv=None):
    try:
        args = build_parser().parse_args(argv)
        if args.command == "simulate":
            out, lines = cmd_simulate(args)
        else:
            tree, data, engine = load(args)
            with engine:
                out, lines = COMMANDS[args.command](args, tree, data, engine)
    except UsageError as e:
        print(f"persiste: error: {e}", file=sys.stderr)
        return 2
    except PersisteError as e:
        print(f"persiste: error: {e.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("persiste: interrupted", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps(_plain(out), allow_nan=False))
    else:
        print("\n".join(lines))
    return 0


def _plain(x):
    """JSON-ready copy: numpy scalars to Python, non-finite numbers to null."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(x) else None
    return x.item() if isinstance(x, np.generic) else x
