"""Request and response shapes of sync pull and push (CONTRACT §10)."""

from rest_framework import serializers

from core.serializers import StrictSerializer
from sync.mutations import MUTATION_NAMES, Mutation

PULL_LIMIT_DEFAULT = 500
PULL_LIMIT_MAX = 1000
PUSH_MUTATIONS_MAX = 1000
MUTATION_ID_MAX = 2**53 - 1  # exact in every client's JSON numbers


class PullInput(StrictSerializer):
    cookie = serializers.CharField(
        required=False,
        allow_null=True,
        allow_blank=True,
        trim_whitespace=False,
        default=None,
        help_text="null on the first pull; then the cookie of the previous answer. A string this server "
        "did not make (or one from before a restore, an org move or the tombstone horizon) answers reset.",
    )
    client_id = serializers.UUIDField(
        required=False, allow_null=True, default=None, help_text="Whose last_mutation_id to report."
    )
    limit = serializers.IntegerField(
        required=False,
        default=PULL_LIMIT_DEFAULT,
        min_value=1,
        max_value=PULL_LIMIT_MAX,
        help_text="Most changes in this page (pages end on whole versions, so a page may hold fewer).",
    )


class ChangeOutput(serializers.Serializer):
    op = serializers.ChoiceField(choices=["put", "del"])
    entity = serializers.ChoiceField(choices=["property", "expense", "revenue"])
    id = serializers.UUIDField()
    value = serializers.JSONField(
        required=False, help_text="For put: the resource as its REST endpoint renders it (with version)."
    )


class PullOutput(serializers.Serializer):
    cookie = serializers.CharField(help_text="Opaque; send it with the next pull.")
    reset = serializers.BooleanField(help_text="True: drop everything held locally, then apply the changes.")
    changes = ChangeOutput(many=True)
    has_more = serializers.BooleanField(help_text="True: pull again with the new cookie right away.")
    last_mutation_id = serializers.IntegerField(help_text="The client's highest processed mutation id.")


class MutationInput(StrictSerializer):
    id = serializers.IntegerField(min_value=1, max_value=MUTATION_ID_MAX)
    name = serializers.ChoiceField(choices=MUTATION_NAMES)
    args = serializers.DictField(
        help_text="create: {id (client-made UUID), property_id, amount, currency, category, occurred_on, "
        "description?}; update: {id, base_version, ...fields}; delete: {id, base_version}."
    )


class PushInput(StrictSerializer):
    client_id = serializers.UUIDField(
        help_text="The client's own id: one per install, kept for its lifetime."
    )
    # many=True makes a ListSerializer, which takes max_length; the stubs check Serializer's kwargs.
    mutations = MutationInput(many=True, max_length=PUSH_MUTATIONS_MAX)  # type: ignore[call-arg]

    def mutation_list(self) -> list[Mutation]:
        return [
            Mutation(id=m["id"], name=m["name"], args=m["args"]) for m in self.validated_data["mutations"]
        ]


class MutationResultOutput(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["applied", "already_applied", "rejected"])
    error = serializers.JSONField(
        required=False,
        help_text='rejected: {"code": "invalid", <field>: [messages]...}, {"code": "conflict", "current": '
        '{resource}}, {"code": "not_found"} or {"code": "forbidden"}',
    )
    version = serializers.IntegerField(required=False, help_text="applied: the change's version.")


class PushOutput(serializers.Serializer):
    results = MutationResultOutput(many=True)
    last_mutation_id = serializers.IntegerField()


class GapOutput(serializers.Serializer):
    detail = serializers.CharField()
    expected = serializers.IntegerField(help_text="The mutation id the server expects next.")


class DetailOutput(serializers.Serializer):
    detail = serializers.CharField()
