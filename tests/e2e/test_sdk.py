"""The Azure Python SDKs (azure-identity + azure-mgmt-resource), configured as their docs say for a
custom cloud: authority and base_url point at the server, the scope is "<base_url>/.default"."""

from __future__ import annotations

import pytest
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError
from azure.identity import ClientSecretCredential
from azure.mgmt.resource import ResourceManagementClient
from azure.mgmt.resource.subscriptions import SubscriptionClient

from support import Server


def credential(server: Server, secret: str | None = None) -> ClientSecretCredential:
    return ClientSecretCredential(
        server.tenant,
        server.client_id,
        secret or server.client_secret,
        authority=server.endpoint.rstrip("/"),
        disable_instance_discovery=True,
        connection_verify=str(server.ca_file),
    )


def clients(server: Server, secret: str | None = None):
    # Single-slash scope, as SDK users write it (az uses audiences[0] + "/.default", i.e. "...//.default").
    common = dict(
        base_url=server.endpoint,
        credential_scopes=[server.endpoint + ".default"],
        connection_verify=str(server.ca_file),
    )
    cred = credential(server, secret)
    return (
        SubscriptionClient(cred, **common),
        ResourceManagementClient(cred, server.subscription, **common),
    )


def test_mgmt_sdk_resource_groups(server: Server):
    subs, resources = clients(server)
    listed = list(subs.subscriptions.list())
    assert [s.subscription_id for s in listed] == [server.subscription]
    assert listed[0].tenant_id == server.tenant

    name = "sdk-rg1"
    group = resources.resource_groups.create_or_update(name, {"location": "eastus", "tags": {"sdk": "yes"}})
    assert group.id == server.rg_id(name)
    assert group.properties.provisioning_state == "Succeeded"
    assert resources.resource_groups.check_existence(name) is True
    assert resources.resource_groups.get(name).tags == {"sdk": "yes"}
    assert name in {g.name for g in resources.resource_groups.list()}

    resources.resource_groups.begin_delete(name).result()
    assert resources.resource_groups.check_existence(name) is False
    with pytest.raises(ResourceNotFoundError) as info:
        resources.resource_groups.get(name)
    assert info.value.error.code == "ResourceGroupNotFound"


def test_identity_wrong_secret(server: Server):
    with pytest.raises(ClientAuthenticationError) as info:
        credential(server, "wrong-secret").get_token(server.endpoint + ".default")
    message = str(info.value)
    assert "AADSTS7000215" in message or "invalid_client" in message, message
