"""Evaluation: metrics per split and detector, plots, the HTML report and the workflow graph."""
