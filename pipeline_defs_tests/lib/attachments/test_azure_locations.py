"""OneLake and ADLS locations, and Azure identity for Delta: pure, no network."""

from pipeline_defs.lib.attachments.file_store import ONELAKE_BLOB_URL, BlobLocation, blob_location
from pipeline_defs.lib.delta.resource import AZURE_STORAGE_SCOPE, DeltaLakeResource
from pipeline_defs.lib.settings import StorageSettings
from pipeline_defs_tests.support.fakes import FakeCredential

ONELAKE_FILES = "abfss://claims-ws@onelake.dfs.fabric.microsoft.com/claims.Lakehouse/Files"
ONELAKE_TABLES = "abfss://claims-ws@onelake.dfs.fabric.microsoft.com/claims.Lakehouse/Tables"


def test_onelake_files_go_through_the_onelake_blob_endpoint():
    location = blob_location(StorageSettings(files_root=ONELAKE_FILES))
    assert location == BlobLocation(ONELAKE_BLOB_URL, "claims-ws", "claims.Lakehouse/Files")


def test_adls_and_blob_roots_name_their_account_and_container():
    adls = blob_location(StorageSettings(files_root="abfss://files@claimsacct.dfs.core.windows.net/attachments/"))
    assert adls == BlobLocation("https://claimsacct.blob.core.windows.net", "files", "attachments")
    azurite = blob_location(
        StorageSettings(
            files_root="az://files/Files",
            azure_account_name="devstoreaccount1",
            azure_endpoint="http://127.0.0.1:10000/devstoreaccount1",
        )
    )
    assert azurite == BlobLocation("http://127.0.0.1:10000/devstoreaccount1", "files", "Files")
    assert blob_location(StorageSettings(files_root=".lake/files")) is None


def test_delta_on_onelake_uses_an_azure_identity_token_and_the_fabric_endpoint():
    lake = DeltaLakeResource(storage=StorageSettings(lake_root=ONELAKE_TABLES))
    credential = FakeCredential()
    lake._credential = credential

    options = lake.storage_options()

    assert options == {"use_fabric_endpoint": "true", "bearer_token": "jwt-token"}
    assert credential.scopes == [AZURE_STORAGE_SCOPE]
    assert lake.table_uri("xact_events") == f"{ONELAKE_TABLES}/xact_events"


def test_a_shared_key_account_never_asks_azure_identity():
    lake = DeltaLakeResource(
        storage=StorageSettings(lake_root="az://lake/tables", azure_account_name="devstoreaccount1"), azure_account_key="k"
    )
    lake._credential = credential = FakeCredential()
    assert lake.storage_options() == {"account_name": "devstoreaccount1", "account_key": "k"}
    assert credential.scopes == []
