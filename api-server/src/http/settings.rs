//! Settings endpoints (no auth, as in the original).

use axum::Json;
use axum::extract::State;
use serde_json::{Map, Value};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::JsonBody;
use super::openapi::{SettingsUpdate, SettingsView};
use crate::settings::SettingsError;
use crate::settings::check::SettingsCheck;
use crate::state::AppState;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_settings, put_settings))
        .routes(routes!(check_settings))
}

/// Every allowed key: sensitive keys as `true`/`false` (is set), others as the stored value or
/// null. Environment values are not shown.
#[utoipa::path(get, path = "/api/settings", tag = "settings",
    responses((status = 200, body = SettingsView)))]
async fn get_settings(State(state): State<AppState>) -> ApiResult<Json<Map<String, Value>>> {
    Ok(Json(state.settings.resolve().await?.public_view()))
}

/// Store settings. Unknown keys are ignored; null or blank deletes; sensitive keys are
/// encrypted (503 without a usable TERARCHITECT_SECRET_KEY). All-or-nothing.
#[utoipa::path(put, path = "/api/settings", tag = "settings", request_body = SettingsUpdate,
    responses((status = 200, body = SettingsView),
        (status = 400, description = "A value is a list or an object"),
        (status = 503, description = "A sensitive value cannot be stored: no usable TERARCHITECT_SECRET_KEY")))]
async fn put_settings(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<Map<String, Value>>,
) -> ApiResult<Json<Map<String, Value>>> {
    state.settings.update(&body).await.map_err(|e| match e {
        SettingsError::EncryptionUnavailable => ApiError::Unavailable(e.to_string()),
        SettingsError::InvalidValue(m) => ApiError::BadRequest(m),
        SettingsError::Db(db) => db.into(),
    })?;
    Ok(Json(state.settings.resolve().await?.public_view()))
}

/// Which settings an agent run still needs.
#[utoipa::path(get, path = "/api/settings/check", tag = "settings",
    responses((status = 200, body = SettingsCheck)))]
async fn check_settings(State(state): State<AppState>) -> ApiResult<Json<SettingsCheck>> {
    Ok(Json(state.settings.resolve().await?.check()))
}
