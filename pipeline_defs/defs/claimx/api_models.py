"""The ClaimX REST API's answers as typed models: camelCase on the wire, unknown fields ignored,
every value bounded (ids plain, instants aware and in range, integers within int64)."""

from __future__ import annotations

from datetime import date
from typing import Optional

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from pipeline_defs.lib.validation.fields import Identifier, Int64, NonEmptyStr, UrlStr, UtcDatetime


class ApiModel(BaseModel):
    """API payloads are camelCase; fields the API adds later are ignored, not fatal."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True)


class Address(ApiModel):
    street: Optional[str] = None
    city: Optional[str] = None
    state: Optional[str] = None
    postal_code: Optional[str] = None


class Project(ApiModel):
    project_id: Identifier
    project_number: Optional[str] = None
    claim_number: Optional[str] = None
    policy_number: Optional[str] = None
    carrier_name: Optional[str] = None
    status: Optional[str] = None
    loss_type: Optional[str] = None
    date_of_loss: Optional[date] = None
    master_file_name: Optional[str] = None
    address: Optional[Address] = None
    created_at: Optional[UtcDatetime] = None
    updated_at: Optional[UtcDatetime] = None


class Contact(ApiModel):
    contact_id: Identifier
    project_id: Identifier
    role: Optional[str] = None
    first_name: Optional[str] = None
    last_name: Optional[str] = None
    email: Optional[str] = None
    phone: Optional[str] = None
    invite_status: Optional[str] = None
    invited_at: Optional[UtcDatetime] = None
    joined_at: Optional[UtcDatetime] = None


class Media(ApiModel):
    media_id: Identifier
    project_id: Identifier
    file_name: NonEmptyStr
    file_type: Optional[str] = None
    content_type: Optional[str] = None
    size_bytes: Optional[Int64] = None
    description: Optional[str] = None
    captured_at: Optional[UtcDatetime] = None
    uploaded_at: Optional[UtcDatetime] = None
    task_assignment_id: Optional[Identifier] = None
    download_url: UrlStr  # presigned, short-lived
    url_expires_at: Optional[UtcDatetime] = None


class TaskTemplate(ApiModel):
    template_id: Identifier
    name: Optional[str] = None
    description: Optional[str] = None
    form_version: Optional[str] = None


class ExternalLink(ApiModel):
    link_id: Identifier
    url: Optional[str] = None  # carries an access token: only its host is kept
    created_at: Optional[UtcDatetime] = None
    expires_at: Optional[UtcDatetime] = None
    access_count: Optional[Int64] = None


class CustomTask(ApiModel):
    assignment_id: Identifier
    project_id: Identifier
    status: Optional[str] = None
    assigned_to: Optional[str] = None
    assigned_at: Optional[UtcDatetime] = None
    completed_at: Optional[UtcDatetime] = None
    due_at: Optional[UtcDatetime] = None
    template: Optional[TaskTemplate] = None
    external_link: Optional[ExternalLink] = None


class VideoCollaboration(ApiModel):
    collaboration_id: Identifier
    project_id: Identifier
    status: Optional[str] = None
    invited_at: Optional[UtcDatetime] = None
    started_at: Optional[UtcDatetime] = None
    completed_at: Optional[UtcDatetime] = None
    duration_seconds: Optional[Int64] = None
    participant_count: Optional[Int64] = None
    recording_count: Optional[Int64] = None
