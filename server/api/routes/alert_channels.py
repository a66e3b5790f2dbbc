"""Outbound alert channels (admin): System → Alerts → Channels. Secrets are write-only."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, status

from server.deps import AdminUser, AuditCtx, RuntimeDep, SessionDep
from server.schemas.alert_channel import (
    AlertChannelCreate,
    AlertChannelList,
    AlertChannelRead,
    AlertChannelTestResult,
    AlertChannelUpdate,
)
from server.security.secret_store import get_secret_store
from server.services import alert_channels as channels_service
from server.services import alert_history

router = APIRouter(prefix="/api/alerts/channels", tags=["alerts"])


@router.get(
    "", response_model=AlertChannelList, summary="Every alert channel with its delivery state (admin)"
)
def list_channels(_: AdminUser, session: SessionDep) -> AlertChannelList:
    return AlertChannelList(items=channels_service.list_channels(session))


@router.post(
    "", response_model=AlertChannelRead, status_code=status.HTTP_201_CREATED, summary="Add a channel (admin)"
)
def create_channel(
    body: AlertChannelCreate, _: AdminUser, session: SessionDep, runtime: RuntimeDep, ctx: AuditCtx
) -> AlertChannelRead:
    channel = channels_service.create_channel(session, body, get_secret_store(runtime), ctx=ctx)
    return channels_service.to_read(session, channel)


@router.patch("/{channel_id}", response_model=AlertChannelRead, summary="Change a channel (admin)")
def update_channel(
    channel_id: uuid.UUID,
    body: AlertChannelUpdate,
    _: AdminUser,
    session: SessionDep,
    runtime: RuntimeDep,
    ctx: AuditCtx,
) -> AlertChannelRead:
    channel = channels_service.update_channel(session, channel_id, body, get_secret_store(runtime), ctx=ctx)
    return channels_service.to_read(session, channel)


@router.delete("/{channel_id}", status_code=status.HTTP_204_NO_CONTENT, summary="Delete a channel (admin)")
def delete_channel(
    channel_id: uuid.UUID, _: AdminUser, session: SessionDep, runtime: RuntimeDep, ctx: AuditCtx
) -> None:
    channels_service.delete_channel(session, channel_id, get_secret_store(runtime), ctx=ctx)


@router.post(
    "/{channel_id}/test", response_model=AlertChannelTestResult, summary="Send a test message now (admin)"
)
async def test_channel(channel_id: uuid.UUID, _: AdminUser, runtime: RuntimeDep) -> AlertChannelTestResult:
    error = await alert_history.send_test(runtime, channel_id)
    return AlertChannelTestResult(ok=error is None, error=error)
