"""``[federation.ray]``: where the Ray engine runs (pydantic only: no Ray import here)."""

from __future__ import annotations

from pydantic import BaseModel, Field, PositiveInt

from privfl.config_rules import SECTION_CONFIG


class RayConfig(BaseModel):
    """``[federation.ray]``: the Ray cluster that trains the clients (``engine = "ray"``).

    ``address = "auto"`` joins the cluster started on this machine with ``ray start --head``
    (other machines join it with ``ray start --address=HEAD:6379``); ``"ray://HOST:10001"``
    connects through Ray Client; unset starts a private local instance for this run.
    """

    model_config = SECTION_CONFIG

    address: str | None = Field(
        None, description='"auto" joins a running cluster; unset starts a local Ray instance'
    )
    num_cpus: PositiveInt | None = Field(
        None, description="CPUs of the local instance (only when address is unset)"
    )
    workers: PositiveInt | None = Field(
        None, description="training actors (default: the cluster's CPU count)"
    )


__all__ = ["RayConfig"]
