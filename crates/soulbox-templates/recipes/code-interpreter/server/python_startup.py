"""Run by every Python kernel of code-interpreter-v1 at start (its kernelspec's `exec_files`), in the user's
namespace, so it leaves no name behind: registers the `e2b/chart` display formatter, which gives each matplotlib
figure shown (plt.show(), the figures a cell leaves open, display(fig)) the chart data E2B's SDKs parse into
`Result.chart` (charts.py), beside its PNG.

matplotlib is not imported here (a second of start-up for every kernel): figures are recognised by their class's
name and charts.py is loaded on the first one."""


def _soulbox_install_chart_formatter() -> None:
    import importlib.util
    import os
    import sys

    from IPython import get_ipython
    from IPython.core.formatters import BaseFormatter
    from traitlets import ObjectName, Unicode

    shell = get_ipython()
    if shell is None:
        return
    path = os.path.join(os.environ.get("SOULBOX_CODE_INTERPRETER_DIR", "/opt/soulbox/code-interpreter"), "charts.py")
    module_name = "_soulbox_charts"

    def charts():
        # Loaded under a private name from the service's directory: the user's sys.path stays as it was.
        module = sys.modules.get(module_name)
        if module is None:
            spec = importlib.util.spec_from_file_location(module_name, path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            sys.modules[module_name] = module
        return module

    def figure_chart(figure):
        try:
            return charts().figure_chart(figure)
        except Exception:  # noqa: BLE001 - a figure the extractor cannot read still shows as its PNG
            return None

    def is_figure(obj) -> bool:
        return any((cls.__module__, cls.__name__) == ("matplotlib.figure", "Figure") for cls in type(obj).__mro__)

    class ChartFormatter(BaseFormatter):
        format_type = Unicode("e2b/chart")
        print_method = ObjectName("_repr_e2b_chart_")
        _return_type = (dict,)

        def __call__(self, obj):
            # Not a type printer (for_type): activating the inline backend removes every formatter's printer for
            # Figure (IPython's select_figure_formats), so figures are recognised here, by their class's name.
            if is_figure(obj):
                return figure_chart(obj)
            return super().__call__(obj)

    shell.display_formatter.formatters["e2b/chart"] = ChartFormatter(parent=shell.display_formatter)


_soulbox_install_chart_formatter()
del _soulbox_install_chart_formatter
