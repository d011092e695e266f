"""The browser tests' fixtures (tests/browser/support.py): servers, Chromium, a watched page."""

from tests.browser.support import browser, chromium_path, open_page, page, server, slow_server

__all__ = ["browser", "chromium_path", "open_page", "page", "server", "slow_server"]
