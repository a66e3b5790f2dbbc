"""The few strings the desktop shell shows itself, in English and Simplified Chinese (from the OS locale).

Everything else is in the web UI, which has its own translations.
"""

from __future__ import annotations

from PySide6.QtCore import QLocale

_STRINGS: dict[str, tuple[str, str]] = {
    # key: (en, zh-CN)
    "app_name": ("ModelTrain", "ModelTrain"),
    "starting": ("Starting ModelTrain…", "正在启动 ModelTrain…"),
    "page_crashed": (
        "The window's page stopped unexpectedly several times in a row. The logs folder has the details.",
        "窗口页面接连多次意外停止。详细信息见日志文件夹。",
    ),
    "reload": ("Reload", "重新加载"),
    "start_failed_title": ("ModelTrain could not start", "ModelTrain 无法启动"),
    "start_failed_intro": ("The built-in server could not start.", "内置服务器无法启动。"),
    "err_port_in_use": ("A network port is already in use by another program.", "网络端口已被其他程序占用。"),
    "err_address_unavailable": (
        "The network address is not available on this computer.",
        "此计算机上没有该网络地址。",
    ),
    "err_database_locked": (
        "The database is locked by another program. Is ModelTrain already running?",
        "数据库被其他程序锁定。ModelTrain 是否已在运行？",
    ),
    "err_disk_full": (
        "The disk is full. Free some space and start again.",
        "磁盘已满。请释放空间后重新启动。",
    ),
    "err_permission_denied": (
        "The data folder cannot be written (permission denied).",
        "无法写入数据文件夹（权限不足）。",
    ),
    "err_database_error": ("The database cannot be opened.", "无法打开数据库。"),
    "err_timeout": ("The server took too long to start.", "服务器启动超时。"),
    "err_startup_failed": ("An unexpected error occurred during start-up.", "启动时发生意外错误。"),
    "details": ("Details", "详细信息"),
    "open_logs": ("Open logs folder", "打开日志文件夹"),
    "close": ("Close", "关闭"),
    "tray_open": ("Open ModelTrain", "打开 ModelTrain"),
    "tray_ollama": ("Ollama", "Ollama"),
    "tray_ollama_start": ("Start", "启动"),
    "tray_ollama_stop": ("Stop", "停止"),
    "tray_ollama_restart": ("Restart", "重启"),
    "tray_lan_on": ("Turn on LAN access…", "开启局域网访问…"),
    "tray_lan_off": ("Turn off LAN access", "关闭局域网访问"),
    "tray_lan_copy": ("Copy LAN address {url}", "复制局域网地址 {url}"),
    "tray_lan_show": ("Show LAN address and QR code…", "显示局域网地址和二维码…"),
    "tray_logs": ("Open logs folder", "打开日志文件夹"),
    "tray_close_to_tray": ("Keep running when the window is closed", "关闭窗口后继续在托盘运行"),
    "tray_quit": ("Quit", "退出"),
    "level_normal": ("normal", "正常"),
    "level_warning": ("warning", "警告"),
    "level_alert": ("alert", "告警"),
    "level_unknown": ("unknown", "未知"),
    "check_server": ("Server", "服务器"),
    "check_database": ("Database", "数据库"),
    "check_ollama": ("Ollama", "Ollama"),
    "check_cpu": ("CPU", "CPU"),
    "check_memory": ("Memory", "内存"),
    "check_disk": ("Disk", "磁盘"),
    "check_latency": ("API latency", "接口延迟"),
    "check_error_rate": ("Error rate", "错误率"),
    "notify_worse": ("{check}: {level}", "{check}：{level}"),
    "notify_recovered": ("{check} recovered", "{check} 已恢复"),
    "lan_title": ("LAN access", "局域网访问"),
    "lan_explain": (
        "Other devices on your network will be able to open ModelTrain. Everyone must sign in.",
        "网络中的其他设备将可以打开 ModelTrain，所有人都必须登录。",
    ),
    "lan_password": ("Your administrator password", "您的管理员密码"),
    "lan_host": ("Address", "地址"),
    "lan_port": ("Port", "端口"),
    "lan_confirm": (
        "I understand that this computer becomes reachable on the network",
        "我了解此计算机将可通过网络访问",
    ),
    "lan_enable": ("Turn on", "开启"),
    "lan_cancel": ("Cancel", "取消"),
    "lan_copy": ("Copy address", "复制地址"),
    "lan_url": ("Open this address on another device:", "在其他设备上打开此地址："),
    "lan_ca": (
        "On each phone or PC, open {url} to download this computer's CA certificate, check that its SHA-256 "
        "fingerprint is\n{fingerprint}\nthen install it and mark it as trusted.",
        "请在每台手机或电脑上打开 {url} 下载本机的 CA 证书，"
        "核对其 SHA-256 指纹为\n{fingerprint}\n然后安装并设为信任。",
    ),
    "lan_failed": ("LAN access could not be turned on: {message}", "无法开启局域网访问：{message}"),
    "closed_to_tray": (
        "ModelTrain keeps running in the tray. Use Quit in the tray menu to stop it.",
        "ModelTrain 仍在托盘中运行。使用托盘菜单中的“退出”来停止。",
    ),
}


def language() -> str:
    """``zh`` for any Chinese OS locale, else ``en``."""
    return "zh" if QLocale.system().name().lower().startswith("zh") else "en"


def tr(key: str, lang: str | None = None, **values: object) -> str:
    en, zh = _STRINGS.get(key, (key, key))
    text = zh if (lang or language()) == "zh" else en
    return text.format(**values) if values else text


def error_text(kind: str, lang: str | None = None) -> str:
    key = f"err_{kind}"
    return tr(key if key in _STRINGS else "err_startup_failed", lang)
