"""The tray icon: colour and tooltip from health, change notifications, and the shell's menu.

Works without a system tray (offscreen, bare X servers): the icon is simply not shown, and the menu,
actions and notifications still run (they are recorded and logged), so the logic is testable.
"""

from __future__ import annotations

import logging

from PySide6.QtCore import QObject, QRectF, Qt, Signal
from PySide6.QtGui import QAction, QColor, QGuiApplication, QIcon, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QMenu, QSystemTrayIcon

from desktop.health_poller import HealthState, Notification
from desktop.i18n import tr

log = logging.getLogger(__name__)

COLOURS = {
    "normal": QColor("#2e9d4f"),  # green
    "warning": QColor("#e6a117"),  # amber
    "alert": QColor("#d93b3b"),  # red
    "unknown": QColor("#8a8f98"),  # grey
}


def make_icon_pixmap(level: str, size: int = 64) -> QPixmap:
    """A round badge in the level's colour with a light "M" so it reads on dark and light panels."""
    pixmap = QPixmap(size, size)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    try:
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        colour = COLOURS.get(level, COLOURS["unknown"])
        painter.setPen(QPen(colour.darker(140), max(1, size // 16)))
        painter.setBrush(colour)
        margin = size / 16
        painter.drawEllipse(QRectF(margin, margin, size - 2 * margin, size - 2 * margin))
        painter.setPen(QPen(QColor("white"), max(2, size // 10)))
        font = painter.font()
        font.setBold(True)
        font.setPixelSize(int(size * 0.5))
        painter.setFont(font)
        painter.drawText(QRectF(0, 0, size, size), Qt.AlignmentFlag.AlignCenter, "M")
    finally:
        painter.end()
    return pixmap


def make_icon(level: str) -> QIcon:
    icon = QIcon()
    for size in (16, 22, 32, 64):
        icon.addPixmap(make_icon_pixmap(level, size))
    return icon


class Tray(QObject):
    open_requested = Signal()
    quit_requested = Signal()
    ollama_requested = Signal(str)  # start | stop | restart
    lan_enable_requested = Signal()
    lan_disable_requested = Signal()
    lan_show_requested = Signal()
    open_logs_requested = Signal()
    close_to_tray_changed = Signal(bool)

    def __init__(self, close_to_tray: bool, lang: str | None = None, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.lang = lang
        self.level = "unknown"
        self.lan_url: str | None = None
        self.shown_messages: list[Notification] = []
        self.available = QSystemTrayIcon.isSystemTrayAvailable()
        self.icon = QSystemTrayIcon(self)
        self.menu = QMenu()
        self._build_menu(close_to_tray)
        self.icon.setContextMenu(self.menu)
        self.icon.activated.connect(self._activated)
        self._icons = {level: make_icon(level) for level in COLOURS}
        self.apply_health(HealthState("unknown"))

    # ---- menu ---------------------------------------------------------------------------------

    def _action(self, text: str, slot) -> QAction:
        action = QAction(text, self.menu)
        action.triggered.connect(slot)
        self.menu.addAction(action)
        return action

    def _build_menu(self, close_to_tray: bool) -> None:
        def t(key: str, **values: object) -> str:
            return tr(key, self.lang, **values)

        self.open_action = self._action(t("tray_open"), self.open_requested.emit)
        self.menu.addSeparator()
        self.ollama_menu = self.menu.addMenu(t("tray_ollama"))
        self.ollama_actions: dict[str, QAction] = {}
        for name in ("start", "stop", "restart"):
            action = QAction(t(f"tray_ollama_{name}"), self.ollama_menu)
            action.triggered.connect(lambda _=False, n=name: self.ollama_requested.emit(n))
            self.ollama_menu.addAction(action)
            self.ollama_actions[name] = action
        self.menu.addSeparator()
        self.lan_toggle_action = self._action(t("tray_lan_on"), self._toggle_lan)
        self.lan_copy_action = self._action(t("tray_lan_copy", url=""), self.copy_lan_url)
        self.lan_show_action = self._action(t("tray_lan_show"), self.lan_show_requested.emit)
        self.menu.addSeparator()
        self.logs_action = self._action(t("tray_logs"), self.open_logs_requested.emit)
        self.close_to_tray_action = self._action(t("tray_close_to_tray"), lambda: None)
        self.close_to_tray_action.setCheckable(True)
        self.close_to_tray_action.setChecked(close_to_tray)
        self.close_to_tray_action.toggled.connect(self.close_to_tray_changed.emit)
        self.menu.addSeparator()
        self.quit_action = self._action(t("tray_quit"), self.quit_requested.emit)
        self.set_lan(None)

    def _toggle_lan(self) -> None:
        if self.lan_url:
            self.lan_disable_requested.emit()
        else:
            self.lan_enable_requested.emit()

    def _activated(self, reason: QSystemTrayIcon.ActivationReason) -> None:
        if reason in (QSystemTrayIcon.ActivationReason.Trigger, QSystemTrayIcon.ActivationReason.DoubleClick):
            self.open_requested.emit()

    # ---- state --------------------------------------------------------------------------------

    def show(self) -> None:
        if self.available:
            self.icon.show()

    def hide(self) -> None:
        self.icon.hide()

    def apply_health(self, state: HealthState) -> None:
        self.level = state.level
        self.icon.setIcon(self._icons.get(state.level, self._icons["unknown"]))
        self.icon.setToolTip(state.tooltip(self.lang))

    def set_lan(self, status: dict | None) -> None:
        """``status`` from GET /api/lan; ``None`` when LAN access is unavailable (or not known yet)."""
        enabled = bool(status and status.get("enabled"))
        self.lan_url = status.get("url") if enabled and status else None
        self.lan_toggle_action.setText(tr("tray_lan_off" if enabled else "tray_lan_on", self.lang))
        self.lan_toggle_action.setEnabled(status is not None)
        self.lan_copy_action.setText(tr("tray_lan_copy", self.lang, url=self.lan_url or ""))
        self.lan_copy_action.setVisible(bool(self.lan_url))
        self.lan_show_action.setVisible(bool(self.lan_url))

    def copy_lan_url(self) -> None:
        if self.lan_url:
            QGuiApplication.clipboard().setText(self.lan_url)

    def notify(self, note: Notification) -> None:
        self.shown_messages.append(note)
        log.info("tray notification: %s", note.message.replace("\n", "; "))
        if self.available and QSystemTrayIcon.supportsMessages():
            icon = {
                "alert": QSystemTrayIcon.MessageIcon.Critical,
                "warning": QSystemTrayIcon.MessageIcon.Warning,
            }.get(note.level, QSystemTrayIcon.MessageIcon.Information)
            self.icon.showMessage(note.title, note.message, icon, 8000)

    def dispose(self) -> None:
        self.icon.hide()
        self.icon.setContextMenu(None)  # type: ignore[arg-type]  # Qt takes nullptr; the stub says QMenu
        self.menu.deleteLater()
