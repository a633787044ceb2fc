"""Plain-text table of an `evaluate_molecules` result: one line per metric, fractions shown as percentages.

Per-type entries ("w1_bond_length.C-H") are indented under their aggregate.
"""

from __future__ import annotations

# key -> (label, unit); unit "%": a fraction printed as a percentage, "count": printed as an integer.
METRIC_LABELS = {
    "num_molecules": ("molecules", "count"),
    "atom_stability": ("atom stability", "%"),
    "mol_stability": ("molecule stability", "%"),
    "validity": ("validity (RDKit)", "%"),
    "uniqueness": ("uniqueness (of valid)", "%"),
    "valid_x_unique": ("valid x unique", "%"),
    "novelty": ("novelty (of unique)", "%"),
    "connected": ("connected", "%"),
    "num_fragments": ("fragments per molecule", ""),
    "w1_num_atoms": ("W1 atom count", "atoms"),
    "w1_atom_types": ("W1 atom types (= TV)", ""),
    "w1_bond_length": ("W1 bond length", "A"),
    "w1_bond_angle": ("W1 bond angle", "deg"),
    "mmff_strain": ("MMFF strain", "kcal/mol/atom"),
    "mmff_typed": ("MMFF typed (of sample)", "%"),
}


def format_value(value: float, unit: str) -> str:
    """A metric value with its unit, percentages to two decimals."""
    if unit == "%":
        return f"{100 * value:.2f} %"
    if unit == "count":
        return f"{int(value)}"
    return f"{value:.4f} {unit}".rstrip()


def format_table(metrics: dict[str, float]) -> str:
    """One-screen table of a metrics dict; unknown keys are printed last, as they are."""
    lines = [f"{'metric':<30} {'value':>20}"]
    known = [key for key in METRIC_LABELS if key in metrics]
    others = [key for key in metrics if key not in METRIC_LABELS and "." not in key]
    for key in known + others:
        label, unit = METRIC_LABELS.get(key, (key, ""))
        lines.append(f"{label:<30} {format_value(metrics[key], unit):>20}")
        for detail in (k for k in metrics if k.startswith(key + ".")):
            lines.append(f"{'  ' + detail[len(key) + 1 :]:<30} {format_value(metrics[detail], unit):>20}")
    return "\n".join(lines)
