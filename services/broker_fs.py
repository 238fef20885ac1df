"""The embedded broker: kombu's filesystem transport with an atomic publish.

kombu's own `_put` creates the message file and then writes it, so a consumer polling the folder
can take the file while it is still empty, fail to decode it and drop the message. Here a
message is written under a name no consumer matches and renamed into place when complete
(a rename is atomic on POSIX), so a consumer only ever sees whole messages.
"""

from __future__ import annotations

import os
import uuid
from time import monotonic
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):  # type: ignore[misc]
    """A filesystem channel whose messages appear whole or not at all."""

    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f"partial-{uuid.uuid4()}.tmp")
        try:
            with open(partial, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, final)
        except OSError as exc:
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc


class Transport(filesystem.Transport):  # type: ignore[misc]
    """kombu's filesystem transport with the atomic Channel."""

    Channel = Channel
