"""persiste: phylogenetic likelihoods of gene presence/absence under a
two-state gain/loss model (Python binding of libpersiste).

    import persiste
    tree = persiste.Tree.read("tree.nwk")
    data = persiste.Data.read(tree, "gene_presence_absence.Rtab", drop_extra_taxa=True,
                              drop_absent_families=True)
    with persiste.Engine(tree, data, condition="present") as engine:
        null = engine.fit()
        print(null.gain, null.loss, null.se_log_gain)
        test = engine.retention_test(["vanA", "vanH"])
        print(test.p_value, test.alt.effects())
"""
from ._core import (BusyError, Context, Data, DomainError, Engine, FileError, Gradient,
                    InvalidArgumentError, Model, NamesError, NoMemoryError, ParseError,
                    Reconstruction, node_table,
                    PersisteError, SizeOverflowError, StateError, Tree, clade_mask, clade_node,
                    gamma_categories, lineage_multipliers, simulate, version)
from ._fit import (Design, FitResult, ModelParameters, TestResult, fit, lineage_test,
                   lrt, retention_test)

__version__ = "0.1.0"
__all__ = ["BusyError", "Context", "Data", "Design", "DomainError", "Engine", "FileError",
           "FitResult", "Gradient", "InvalidArgumentError", "Model", "NamesError",
           "NoMemoryError", "ParseError", "PersisteError", "Reconstruction", "node_table", "SizeOverflowError", "StateError",
           "TestResult", "Tree", "clade_mask", "clade_node", "fit", "gamma_categories",
           "lineage_multipliers", "lineage_test", "lrt", "ModelParameters", "retention_test", "simulate",
           "version"]
