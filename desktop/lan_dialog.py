"""LAN access dialog: explicit consent + admin password to turn it on; the URL and a QR code when on."""

from __future__ import annotations

import ipaddress

import qrcode
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor, QGuiApplication, QImage, QPainter, QPixmap
from PySide6.QtWidgets import (
    QCheckBox,
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from desktop.i18n import tr


def qr_matrix(text: str) -> list[list[bool]]:
    code = qrcode.QRCode(error_correction=qrcode.constants.ERROR_CORRECT_M, border=2)
    code.add_data(text)
    code.make(fit=True)
    return code.get_matrix()


def qr_pixmap(text: str, module_px: int = 6) -> QPixmap:
    """The QR code of ``text`` drawn with QPainter (black modules on white, quiet zone included)."""
    matrix = qr_matrix(text)
    size = len(matrix) * module_px
    image = QImage(size, size, QImage.Format.Format_RGB32)
    image.fill(QColor("white"))
    painter = QPainter(image)
    try:
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(QColor("black"))
        for y, row in enumerate(matrix):
            for x, dark in enumerate(row):
                if dark:
                    painter.drawRect(x * module_px, y * module_px, module_px, module_px)
    finally:
        painter.end()
    return QPixmap.fromImage(image)


class LanDialog(QDialog):
    """Page 1 (off): address, port, password, consent -> ``submitted``. Page 2 (on): URL, copy, QR."""

    submitted = Signal(str, int, str)  # host, port, password

    def __init__(self, status: dict | None, lang: str | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.lang = lang
        self.setWindowTitle(tr("lan_title", lang))
        self.setModal(True)
        self._layout = QVBoxLayout(self)
        self.error_label = QLabel("")
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #d93b3b")
        self.error_label.hide()
        self._page: QWidget | None = None
        if status and status.get("enabled") and status.get("url"):
            self.show_enabled(status)
        else:
            self._build_form(status or {})

    def _swap(self, page: QWidget) -> None:
        if self._page is not None:
            self._page.deleteLater()
        self._page = page
        self._layout.insertWidget(0, page)

    def _build_form(self, status: dict) -> None:
        page = QWidget(self)
        layout = QVBoxLayout(page)
        explain = QLabel(tr("lan_explain", self.lang))
        explain.setWordWrap(True)
        layout.addWidget(explain)
        form = QFormLayout()
        self.host_edit = QLineEdit(str(status.get("host") or "0.0.0.0"))
        self.port_spin = QSpinBox()
        self.port_spin.setRange(1, 65535)
        self.port_spin.setValue(int(status.get("port") or 8765))
        self.password_edit = QLineEdit()
        self.password_edit.setEchoMode(QLineEdit.EchoMode.Password)
        form.addRow(tr("lan_host", self.lang), self.host_edit)
        form.addRow(tr("lan_port", self.lang), self.port_spin)
        form.addRow(tr("lan_password", self.lang), self.password_edit)
        layout.addLayout(form)
        self.confirm_box = QCheckBox(tr("lan_confirm", self.lang))
        layout.addWidget(self.confirm_box)
        layout.addWidget(self.error_label)
        buttons = QDialogButtonBox()
        self.enable_button = buttons.addButton(
            tr("lan_enable", self.lang), QDialogButtonBox.ButtonRole.AcceptRole
        )
        cancel = buttons.addButton(tr("lan_cancel", self.lang), QDialogButtonBox.ButtonRole.RejectRole)
        self.enable_button.clicked.connect(self._submit)
        cancel.clicked.connect(self.reject)
        layout.addWidget(buttons)
        for signal in (self.confirm_box.toggled, self.password_edit.textChanged, self.host_edit.textChanged):
            signal.connect(self._update_enabled)
        self._update_enabled()
        self._swap(page)

    def _host_valid(self) -> bool:
        try:
            ipaddress.ip_address(self.host_edit.text().strip())
            return True
        except ValueError:
            return False

    def _update_enabled(self) -> None:
        self.enable_button.setEnabled(
            self.confirm_box.isChecked() and bool(self.password_edit.text()) and self._host_valid()
        )

    def _submit(self) -> None:
        if not self.enable_button.isEnabled():
            return
        self.error_label.hide()
        self.enable_button.setEnabled(False)
        self.submitted.emit(self.host_edit.text().strip(), self.port_spin.value(), self.password_edit.text())

    def show_error(self, message: str) -> None:
        self.error_label.setText(tr("lan_failed", self.lang, message=message))
        self.error_label.show()
        self.password_edit.clear()
        self._update_enabled()

    def show_enabled(self, status: dict) -> None:
        url = str(status.get("url") or "")
        page = QWidget(self)
        layout = QVBoxLayout(page)
        layout.addWidget(QLabel(tr("lan_url", self.lang)))
        self.url_label = QLabel(url)
        self.url_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.url_label.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        self.url_label.setFont(font)
        layout.addWidget(self.url_label)
        self.qr_label = QLabel()
        self.qr_label.setPixmap(qr_pixmap(url))
        self.qr_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        layout.addWidget(self.qr_label)
        copy = QPushButton(tr("lan_copy", self.lang))
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(url))
        layout.addWidget(copy)
        fingerprint, ca_url = status.get("ca_fingerprint_sha256"), status.get("ca_download_url")
        self.ca_label: QLabel | None = None
        if fingerprint and ca_url:
            self.ca_label = QLabel(tr("lan_ca", self.lang, url=ca_url, fingerprint=fingerprint))
            self.ca_label.setWordWrap(True)
            self.ca_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            layout.addWidget(self.ca_label)
        close = QPushButton(tr("close", self.lang))
        close.clicked.connect(self.accept)
        layout.addWidget(close)
        self._swap(page)
