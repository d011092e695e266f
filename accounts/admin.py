from __future__ import annotations

from django.contrib import admin
from django.contrib.auth.admin import UserAdmin

from accounts.models import User

admin.site.register(User, UserAdmin)
admin.site.site_header = "Parley operations"
admin.site.site_title = "Parley admin"
