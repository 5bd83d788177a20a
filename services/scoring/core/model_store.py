"""Fitted models in the database (SQLite or PostgreSQL, the service's own), so that a
restarted replica, or a new one, loads the newest model instead of fitting, and leases so
that replicas sharing the database do not fit the same configuration at the same time.

A model is stored pickled (numpy arrays, and a PyTorch module for two_tower), keyed by
configuration hash and the data watermark it was fitted on; the two newest of each
configuration are kept. Pickles run code when loaded: the database is trusted as the
service's own code is, like the rest of its state.

Some models refer to what belongs to the replica rather than to the model (popularity reads
the replica's live interactions; content encodes with the replica's EmbeddingService client):
those objects, named in ``replica_objects``, are stored by name and the loading replica puts
its own in their place.
"""

from __future__ import annotations

import io
import pickle
import time
from collections.abc import Callable, Mapping

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from services.scoring.core.fitting import Fitted
from services.scoring.core.tables import fit_leases, fitted_models

KEEP_PER_CONFIGURATION = 2


class _Pickler(pickle.Pickler):
    def __init__(self, file: io.BytesIO, replica_objects: Mapping[str, object]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.names = {id(value): name for name, value in replica_objects.items()}

    def persistent_id(self, obj: object) -> str | None:
        return self.names.get(id(obj))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, replica_objects: Mapping[str, object]) -> None:
        super().__init__(file)
        self.replica_objects = replica_objects

    def persistent_load(self, pid: object) -> object:
        if not isinstance(pid, str) or pid not in self.replica_objects:
            raise pickle.UnpicklingError(f"a stored model refers to {pid!r}, which this replica does not have")
        return self.replica_objects[pid]


class ModelStore:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], float] = time.time,
        replica_objects: Mapping[str, object] | None = None,
    ) -> None:
        self.engine = engine
        self.clock = clock
        self.replica_objects = dict(replica_objects or {})

    def save(self, fitted: Fitted) -> int:
        """Store the model; returns its size in bytes."""
        buffer = io.BytesIO()
        _Pickler(buffer, self.replica_objects).dump(fitted)
        payload = buffer.getvalue()
        key = fitted.configuration.hash
        row = {
            "configuration_hash": key,
            "watermark": fitted.watermark,
            "strategy": fitted.configuration.strategy,
            "fitted_at": fitted.fitted_at,
            "n_items": fitted.model.n_items,
            "size_bytes": len(payload),
            "payload": payload,
        }
        with self.engine.begin() as connection:
            connection.execute(
                delete(fitted_models).where(
                    fitted_models.c.configuration_hash == key, fitted_models.c.watermark == fitted.watermark
                )
            )
            connection.execute(insert(fitted_models), row)
            kept = select(fitted_models.c.watermark).where(fitted_models.c.configuration_hash == key)
            watermarks = sorted((w for (w,) in connection.execute(kept)), reverse=True)
            for old in watermarks[KEEP_PER_CONFIGURATION:]:
                connection.execute(
                    delete(fitted_models).where(
                        fitted_models.c.configuration_hash == key, fitted_models.c.watermark == old
                    )
                )
        return len(payload)

    def newest(self, configuration_hash: str, max_items: int, after_watermark: int = -1) -> Fitted | None:
        """The newest stored model of the configuration that fits a catalogue of ``max_items``
        (a replica that has not caught up on new items cannot serve a model that knows them),
        fitted on more than ``after_watermark`` interactions."""
        query = (
            select(fitted_models.c.payload)
            .where(
                fitted_models.c.configuration_hash == configuration_hash,
                fitted_models.c.n_items <= max_items,
                fitted_models.c.watermark > after_watermark,
            )
            .order_by(fitted_models.c.watermark.desc())
            .limit(1)
        )
        with self.engine.connect() as connection:
            payload = connection.execute(query).scalar()
        if payload is None:
            return None
        # The service's own database (see the module docstring).
        fitted: Fitted = _Unpickler(io.BytesIO(payload), self.replica_objects).load()
        return fitted

    def sizes(self) -> dict[str, int]:
        """Bytes of the newest stored model of each strategy."""
        query = select(fitted_models.c.strategy, fitted_models.c.size_bytes).order_by(fitted_models.c.watermark)
        with self.engine.connect() as connection:
            return {strategy: size for strategy, size in connection.execute(query)}

    def try_lease(self, configuration_hash: str, holder: str, seconds: float) -> bool:
        """Take (or renew) the lease on fitting the configuration; False while another
        holder's lease runs."""
        now = self.clock()
        row = {"configuration_hash": configuration_hash, "holder": holder, "expires_at": now + seconds}
        try:
            with self.engine.begin() as connection:
                taken = connection.execute(
                    update(fit_leases)
                    .where(
                        fit_leases.c.configuration_hash == configuration_hash,
                        (fit_leases.c.holder == holder) | (fit_leases.c.expires_at < now),
                    )
                    .values(holder=holder, expires_at=now + seconds)
                ).rowcount
                if taken:
                    return True
                exists = connection.execute(
                    select(fit_leases.c.holder).where(fit_leases.c.configuration_hash == configuration_hash)
                ).first()
                if exists is not None:
                    return False
                connection.execute(insert(fit_leases), row)
                return True
        except IntegrityError:  # another replica inserted the lease first
            return False

    def lease_expiry(self, configuration_hash: str) -> float | None:
        query = select(fit_leases.c.expires_at).where(fit_leases.c.configuration_hash == configuration_hash)
        with self.engine.connect() as connection:
            value = connection.execute(query).scalar()
        return None if value is None else float(value)

    def release(self, configuration_hash: str, holder: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(
                delete(fit_leases).where(
                    fit_leases.c.configuration_hash == configuration_hash, fit_leases.c.holder == holder
                )
            )
