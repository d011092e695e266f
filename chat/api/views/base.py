"""What every REST view shares: the base class (authentication, permission-checked lookups,
errors always JSON), several operations on one URL, pagination, the error statuses an
operation documents, and the JSON 404 for any other path under /api/v1/."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from django.db.models import QuerySet
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from rest_framework import renderers
from rest_framework.authentication import SessionAuthentication
from rest_framework.exceptions import ValidationError
from rest_framework.pagination import PageNumberPagination
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.auth import ApiKeyAuthentication
from chat import selectors
from chat.api import schema as _schema  # noqa: F401 - registers the schema extensions
from chat.api.caller import Caller, caller_of
from chat.api.errors import ErrorSerializer, error_body
from chat.api.parsers import BoundedJSONParser
from chat.errors import ChatError
from chat.models import Conversation, Message


def errors(*statuses: int) -> dict[tuple[int, str], Any]:
    """Schema responses for the error statuses an operation may answer (always JSON)."""
    return {(status, "application/json"): ErrorSerializer for status in (401, 403, 429, *statuses)}


class ApiView(APIView):
    authentication_classes = [ApiKeyAuthentication, SessionAuthentication]
    permission_classes = [IsAuthenticated]
    parser_classes = [BoundedJSONParser]

    def finalize_response(
        self, request: Request, response: Response, *args: Any, **kwargs: Any
    ) -> Response:
        # Errors are JSON whatever was asked for (a Markdown or event-stream view included).
        if isinstance(response, Response) and response.status_code >= 400:
            request.accepted_renderer = renderers.JSONRenderer()
            request.accepted_media_type = "application/json"
        return super().finalize_response(request, response, *args, **kwargs)

    def caller(self) -> Caller:
        return caller_of(self.request)

    def conversation(self, conversation_id: int) -> Conversation:
        caller = self.caller()
        return selectors.conversation_access(
            user=caller.user,
            conversation_id=conversation_id,
            organisation=caller.only_organisation,
        )

    def message(self, message_id: int) -> Message:
        caller = self.caller()
        return selectors.message_access(
            user=caller.user, message_id=message_id, organisation=caller.only_organisation
        )


def operations(*classes: type[ApiView]) -> Callable[..., Any]:
    """One URL serving several operations, each its own view class with one HTTP method:
    the classes are combined so their methods sit side by side (and the schema sees each
    method's own annotations)."""
    name = "".join(c.__name__ for c in classes)
    combined = cast(type[ApiView], type(name, classes, {"__doc__": classes[0].__doc__}))
    return combined.as_view()


@contextmanager
def state_conflicts() -> Iterator[None]:
    """A service's refusal of a well-formed request because of the message's state or kind
    (cancel a user message, regenerate an earlier reply, edit someone else's message): 409,
    not 400 — the request was valid, the target does not allow it."""
    try:
        yield
    except ChatError as error:
        if error.code != "bad_frame":
            raise
        raise ChatError("conflict", error.detail) from None


def query_dict(request: Request) -> dict[str, str]:
    """The query string as a plain dict (last value wins): an empty `days=` is then a bad
    integer (400), where DRF's form handling would take it as left out."""
    return {name: request.query_params[name] for name in request.query_params}


class Pagination(PageNumberPagination):
    """Pages of 20; `page_size` 1 to 100. A `page_size` that is not such a number is a 400
    (DRF would quietly use the default), an out-of-range `page` a 404."""

    page_size = 20
    page_size_query_param = "page_size"
    max_page_size = 100

    def get_page_size(self, request: Any) -> int:
        raw = request.query_params.get(self.page_size_query_param)
        if raw is None:
            return self.page_size
        try:
            size = int(raw)
        except ValueError:
            size = 0
        if str(size) != raw.strip() or not 1 <= size <= self.max_page_size:
            raise ValidationError(
                {"page_size": [f"A whole number from 1 to {self.max_page_size}."]}
            )
        return size

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.page_size_query_param:
                parameter["schema"].update({"minimum": 1, "maximum": self.max_page_size})
            elif parameter["name"] == self.page_query_param:
                parameter["schema"].update({"minimum": 1})
        return parameters


def paginated(view: ApiView, queryset: QuerySet[Any], serializer: type) -> Response:
    paginator = Pagination()
    page = paginator.paginate_queryset(queryset, view.request, view=view)
    assert page is not None
    return paginator.get_paginated_response(serializer(page, many=True).data)


@csrf_exempt  # it changes nothing; a CSRF refusal would only hide the 404
def not_found(request: HttpRequest, rest: str = "") -> JsonResponse:
    """Any other path under /api/v1/ (or an id that is not a number): a JSON 404."""
    return JsonResponse(error_body("not_found", "No such endpoint or object."), status=404)
