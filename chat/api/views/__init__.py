"""REST API views (/api/v1/), one module per resource, one view class per operation (input
serializer → selector/service → output serializer):

- `conversations`: list, create, detail, rename, delete, export (JSON, Markdown)
- `messages`: list, send, detail, cancel, regenerate, edit
- `stream`: a reply's text as server-sent events
- `models`: the model aliases a caller may use
- `usage`: tokens and cost, the caller's and the organisation's
- `base`: what they share: ApiView (authentication, lookups), pagination, error statuses in
  the schema, the catch-all 404

Authentication: an API key (`Authorization: Bearer pk_…`, reaching its organisation only) or
a session (with CSRF on unsafe methods, reaching the user's organisations). Errors: see
chat/api/errors.py. Documents' operations are in chat/documents/api.py.
"""
