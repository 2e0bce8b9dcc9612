"""Course preview images: a CT montage with contours and dose, a DVH plot, and markdown embedding.

* :mod:`~rt_resources.qc.previews.montage`: :func:`ct_montage_png`, three planes through the target.
* :mod:`~rt_resources.qc.previews.plane`: which planes: the centre (target, dose maximum or image
  centre) and the axial, coronal and sagittal slabs of the CT through it, with their display
  conventions.
* :mod:`~rt_resources.qc.previews.overlays`: what is drawn on a plane: the CT window, the dose
  wash, ROI outlines, orientation letters, the legend and the dose colour bar.
* :mod:`~rt_resources.qc.previews.dvh_plot`: :func:`dvh_plot_png`, the cumulative DVHs.
* :mod:`~rt_resources.qc.previews.render`: figure to PNG (atomic write), :func:`png_markdown`, and
  the style the pictures share.

Rendering uses matplotlib's object API (``Figure`` + the Agg canvas), never pyplot, so it is
safe in worker processes and leaves no global state behind. matplotlib, SimpleITK, skimage
and PIL are imported inside the functions: importing these modules stays cheap.
"""
