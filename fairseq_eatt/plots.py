"""Plots of the reports and tools (matplotlib off screen, PNG written atomically), for every layer that draws."""
import logging
import os


def pyplot():
    """matplotlib's pyplot drawing off screen (no display needed), with its debug logging quiet."""
    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib").setLevel(logging.WARNING)
    import matplotlib.pyplot as plt

    return plt


def plot_points(points, path: str, xlabel: str, ylabel: str, title: str) -> str:
    """A scatter plot with one marker style per point and a legend beside the axes: variants often share
    energy and BLEU, and names written next to the points would overlap."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4))
    colors, markers = plt.get_cmap("tab20").colors, "osD^vPX*<>"
    for i, (label, x, y) in enumerate(points):
        ax.scatter([x], [y], label=label, color=colors[i % len(colors)], marker=markers[i % len(markers)],
                   s=36, edgecolors="black", linewidths=0.4)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    save(fig, path)
    return os.path.basename(path)


def finish(fig, ax, xlabel: str, ylabel: str, title: str, path: str):
    """Label a plot with a legend and write it as PNG."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save(fig, path)


def save(fig, path: str, dpi: int = 120):
    """Write ``fig`` as PNG to ``path`` atomically and close it."""
    from .data.text import atomic_output

    with atomic_output(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=dpi)
    pyplot().close(fig)
