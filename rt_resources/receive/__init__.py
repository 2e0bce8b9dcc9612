"""Receive DICOM over the network (C-STORE) into the drop folder, as safely as a folder copy.

``scp.DicomReceiver`` is the Storage/Verification SCP (pynetdicom); ``staging.StagingArea`` writes
each association into ``DROP/.rtpipeline-receive/staging/`` and moves a released one into
``DROP/<calling AE>/<association id>/`` with a ``_COMPLETE`` marker. The drop sensor then applies
its usual rules; the index never looks into the staging folder.
"""

from rt_resources.receive.config import AllowRule, ListenError, ReceiverConfig, TlsFiles
from rt_resources.receive.scp import DicomReceiver
from rt_resources.receive.staging import ReceiveError, StagingArea

__all__ = ["AllowRule", "DicomReceiver", "ListenError", "ReceiveError", "ReceiverConfig", "StagingArea", "TlsFiles"]
