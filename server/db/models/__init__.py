"""ORM models. Importing this package registers every table on ``Base.metadata``."""

from server.db.models.alert_channel import AlertChannel, AlertDelivery
from server.db.models.alert_event import AlertEvent
from server.db.models.api_key import ApiKey
from server.db.models.app_setting import AppSetting
from server.db.models.audit import AuditEntry
from server.db.models.backup import BackupLease
from server.db.models.conversation import Conversation
from server.db.models.file import File, MessageFile
from server.db.models.instance_snapshot import InstanceSnapshot
from server.db.models.knowledge import KnowledgeChunk, KnowledgeCollection, KnowledgeDocument
from server.db.models.limit import LimitCounter, LimitOverride, LimitReservation
from server.db.models.login_throttle import LoginThrottle
from server.db.models.message import Message, MessageStatus
from server.db.models.model_config import ModelConfig
from server.db.models.model_route import ModelRoute
from server.db.models.provider import Provider
from server.db.models.pull_cancel import PullCancel
from server.db.models.refresh_token import RefreshToken
from server.db.models.shared_pull import SharedPull
from server.db.models.stream_stop import StreamStop
from server.db.models.usage import UsageRecord, UsageRollup
from server.db.models.user import User

__all__ = [
    "AlertChannel",
    "AlertDelivery",
    "AlertEvent",
    "ApiKey",
    "AppSetting",
    "AuditEntry",
    "BackupLease",
    "Conversation",
    "File",
    "InstanceSnapshot",
    "KnowledgeChunk",
    "KnowledgeCollection",
    "KnowledgeDocument",
    "LimitCounter",
    "LimitOverride",
    "LimitReservation",
    "LoginThrottle",
    "Message",
    "MessageFile",
    "MessageStatus",
    "ModelConfig",
    "ModelRoute",
    "Provider",
    "PullCancel",
    "RefreshToken",
    "SharedPull",
    "StreamStop",
    "UsageRecord",
    "UsageRollup",
    "User",
]
