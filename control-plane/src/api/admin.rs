//! `gateway.v1.AdminService`: validates requests into domain types and calls the store.

use std::sync::Arc;

use gw_proto::v1 as pb;
use gw_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use crate::api::status::INTERNAL_MESSAGE;
use crate::apply::Document;
use crate::domain::consumer::check_ttl;
use crate::domain::{ApiKey, Certificate, Consumer, JwtCredential, Policy, Service, validate};
use crate::fleet::nodes::NodeRegistry;
use crate::fleet::view;
use crate::store::Store;

/// The AdminService implementation.
#[derive(Debug, Clone)]
pub struct AdminApi {
    store: Arc<Store>,
    nodes: Arc<NodeRegistry>,
}

impl AdminApi {
    /// Serves `store` and `nodes`.
    pub fn new(store: Arc<Store>, nodes: Arc<NodeRegistry>) -> Self {
        Self { store, nodes }
    }

    /// Runs one store write to completion on its own task, whatever happens to the caller.
    ///
    /// tonic drops a handler's future when the client cancels or its deadline passes. A write
    /// dropped between SQLite's COMMIT and publishing the new state would leave the database
    /// ahead of what the control plane serves and streams, so the write is never dropped
    /// half-way: the caller may go, the write finishes.
    async fn write<T, E, F, Fut>(&self, write: F) -> Result<T, Status>
    where
        T: Send + 'static,
        E: Send + 'static,
        F: FnOnce(Arc<Store>) -> Fut,
        E: Into<Status>,
        Fut: std::future::Future<Output = Result<T, E>> + Send + 'static,
    {
        match tokio::spawn(write(self.store.clone())).await {
            Ok(result) => result.map_err(Into::into),
            Err(e) => {
                tracing::error!(error = %e, "store write task failed");
                Err(Status::internal(INTERNAL_MESSAGE))
            }
        }
    }
}

/// Validates a name given to select an existing object.
fn lookup_name(name: &str) -> Result<(), Status> {
    validate::name(name).map_err(|p| Status::invalid_argument(format!("name: {p}")))
}

/// Runs a fleet view on the blocking pool: over thousands of nodes it is milliseconds of CPU
/// that should not hold up the config streams sharing the async workers.
async fn off_runtime<T: Send + 'static>(
    build: impl FnOnce() -> Result<T, view::ViewError> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(build).await {
        Ok(result) => Ok(result?),
        Err(e) => {
            tracing::error!(error = %e, "building a fleet view failed");
            Err(Status::internal(
                "building the fleet view failed; see the control plane's log",
            ))
        }
    }
}

fn consumer_of(msg: Option<pb::Consumer>) -> Result<Consumer, Status> {
    let msg = msg.ok_or_else(|| Status::invalid_argument("consumer: required"))?;
    Ok(Consumer::try_from(msg)?)
}

/// Validates an id given to select a credential: `prefix` and hex digits, as the create RPC
/// makes them (`k-` for API keys, `j-` for JWT credentials).
fn credential_id(id: &str, prefix: &str, what: &str, listed_by: &str) -> Result<(), Status> {
    let ok = id.len() <= 64
        && id
            .strip_prefix(prefix)
            .is_some_and(|hex| !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()));
    if ok {
        Ok(())
    } else {
        Err(Status::invalid_argument(format!(
            "id: '{}' is not {what} ({prefix} and hex digits, as `{listed_by}` shows)",
            validate::echo(id)
        )))
    }
}

/// The consumers a listing asks for: all (`name` empty) or the one named.
fn selected_consumers<'a>(
    state: &'a crate::state::ConfigState,
    name: &str,
) -> Result<Vec<&'a Arc<Consumer>>, Status> {
    if name.is_empty() {
        return Ok(state.consumers.values().collect());
    }
    validate::name(name).map_err(|p| Status::invalid_argument(format!("consumer: {p}")))?;
    let one = state
        .consumers
        .get(name)
        .ok_or_else(|| Status::not_found(format!("consumer '{name}' does not exist")))?;
    Ok(vec![one])
}

fn service_of(msg: Option<pb::Service>) -> Result<Service, Status> {
    let msg = msg.ok_or_else(|| Status::invalid_argument("service: required"))?;
    Ok(Service::try_from(msg)?)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_service(
        &self,
        request: Request<pb::CreateServiceRequest>,
    ) -> Result<Response<pb::CreateServiceResponse>, Status> {
        let pb::CreateServiceRequest { service } = request.into_inner();
        let service = service_of(service)?;
        let (service, version) = self
            .write(move |store| async move { store.create_service(service).await })
            .await?;
        tracing::info!(service = %service.name, version, "service created");
        Ok(Response::new(pb::CreateServiceResponse {
            service: Some(pb::Service::from(&service)),
            config_version: version,
        }))
    }

    async fn get_service(
        &self,
        request: Request<pb::GetServiceRequest>,
    ) -> Result<Response<pb::GetServiceResponse>, Status> {
        let pb::GetServiceRequest { name } = request.into_inner();
        lookup_name(&name)?;
        let state = self.store.current();
        let service = state
            .services
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("service '{name}' does not exist")))?;
        Ok(Response::new(pb::GetServiceResponse {
            service: Some(pb::Service::from(&**service)),
        }))
    }

    async fn list_services(
        &self,
        request: Request<pb::ListServicesRequest>,
    ) -> Result<Response<pb::ListServicesResponse>, Status> {
        let pb::ListServicesRequest {} = request.into_inner();
        let state = self.store.current();
        Ok(Response::new(pb::ListServicesResponse {
            services: state.pb_services().to_vec(),
            config_version: state.version,
        }))
    }

    async fn update_service(
        &self,
        request: Request<pb::UpdateServiceRequest>,
    ) -> Result<Response<pb::UpdateServiceResponse>, Status> {
        let pb::UpdateServiceRequest { service } = request.into_inner();
        let service = service_of(service)?;
        let (service, version) = self
            .write(move |store| async move { store.update_service(service).await })
            .await?;
        tracing::info!(service = %service.name, version, "service updated");
        Ok(Response::new(pb::UpdateServiceResponse {
            service: Some(pb::Service::from(&service)),
            config_version: version,
        }))
    }

    async fn delete_service(
        &self,
        request: Request<pb::DeleteServiceRequest>,
    ) -> Result<Response<pb::DeleteServiceResponse>, Status> {
        let pb::DeleteServiceRequest { name } = request.into_inner();
        lookup_name(&name)?;
        let version = {
            let name = name.clone();
            self.write(move |store| async move { store.delete_service(&name).await })
                .await?
        };
        tracing::info!(service = %name, version, "service deleted");
        Ok(Response::new(pb::DeleteServiceResponse {
            config_version: version,
        }))
    }

    async fn put_policy(
        &self,
        request: Request<pb::PutPolicyRequest>,
    ) -> Result<Response<pb::PutPolicyResponse>, Status> {
        let pb::PutPolicyRequest { policy } = request.into_inner();
        let policy = policy.ok_or_else(|| Status::invalid_argument("policy: required"))?;
        let policy = Policy::try_from(policy)?;
        let (policy, created, version) = self
            .write(move |store| async move { store.put_policy(policy).await })
            .await?;
        tracing::info!(policy = %policy.name, created, version, "policy written");
        Ok(Response::new(pb::PutPolicyResponse {
            policy: Some(pb::Policy::from(&policy)),
            created,
            config_version: version,
        }))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let pb::ListPoliciesRequest {} = request.into_inner();
        let state = self.store.current();
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: state.pb_policies().to_vec(),
            config_version: state.version,
        }))
    }

    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let pb::DeletePolicyRequest { name } = request.into_inner();
        lookup_name(&name)?;
        let version = {
            let name = name.clone();
            self.write(move |store| async move { store.delete_policy(&name).await })
                .await?
        };
        tracing::info!(policy = %name, version, "policy deleted");
        Ok(Response::new(pb::DeletePolicyResponse {
            config_version: version,
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let pb::ListNodesRequest {} = request.into_inner();
        Ok(Response::new(pb::ListNodesResponse {
            nodes: self.nodes.list(),
            config_version: self.store.current().version,
        }))
    }

    async fn get_health(
        &self,
        request: Request<pb::GetHealthRequest>,
    ) -> Result<Response<pb::GetHealthResponse>, Status> {
        let pb::GetHealthRequest { service } = request.into_inner();
        if !service.is_empty() {
            validate::name(&service)
                .map_err(|p| Status::invalid_argument(format!("service: {p}")))?;
        }
        let (state, fleet) = (self.store.current(), self.nodes.fleet());
        let health = off_runtime(move || view::health(&state, &fleet, &service)).await?;
        Ok(Response::new(health))
    }

    async fn get_stats(
        &self,
        request: Request<pb::GetStatsRequest>,
    ) -> Result<Response<pb::GetStatsResponse>, Status> {
        let pb::GetStatsRequest {
            service,
            node_id,
            consumer,
        } = request.into_inner();
        if !service.is_empty() {
            validate::name(&service)
                .map_err(|p| Status::invalid_argument(format!("service: {p}")))?;
        }
        if !consumer.is_empty() {
            validate::name(&consumer)
                .map_err(|p| Status::invalid_argument(format!("consumer: {p}")))?;
            if !service.is_empty() {
                return Err(Status::invalid_argument(
                    "consumer: cannot be combined with service (a consumer's figures are over \
                     every service)",
                ));
            }
        }
        let state = self.store.current();
        let fleet = if consumer.is_empty() {
            self.nodes.fleet()
        } else {
            self.nodes.fleet_for_consumer(&consumer)
        };
        let stats = off_runtime(move || {
            if consumer.is_empty() {
                view::stats(&state, &fleet, &service, &node_id)
            } else {
                view::consumer_stats(&state, &fleet, &consumer, &node_id)
            }
        })
        .await?;
        Ok(Response::new(stats))
    }

    async fn put_certificate(
        &self,
        request: Request<pb::PutCertificateRequest>,
    ) -> Result<Response<pb::PutCertificateResponse>, Status> {
        let pb::PutCertificateRequest { certificate } = request.into_inner();
        let certificate =
            certificate.ok_or_else(|| Status::invalid_argument("certificate: required"))?;
        let certificate = Certificate::try_from(certificate)?;
        let (certificate, created, version) = self
            .write(move |store| async move { store.put_certificate(certificate).await })
            .await?;
        tracing::info!(certificate = %certificate.name, sans = ?certificate.info.sans(),
            created, version, "certificate written");
        Ok(Response::new(pb::PutCertificateResponse {
            certificate: Some(certificate.to_public()),
            created,
            config_version: version,
        }))
    }

    async fn list_certificates(
        &self,
        request: Request<pb::ListCertificatesRequest>,
    ) -> Result<Response<pb::ListCertificatesResponse>, Status> {
        let pb::ListCertificatesRequest {} = request.into_inner();
        let state = self.store.current();
        Ok(Response::new(pb::ListCertificatesResponse {
            certificates: state.pb_certificates(),
            config_version: state.version,
        }))
    }

    async fn delete_certificate(
        &self,
        request: Request<pb::DeleteCertificateRequest>,
    ) -> Result<Response<pb::DeleteCertificateResponse>, Status> {
        let pb::DeleteCertificateRequest { name } = request.into_inner();
        lookup_name(&name)?;
        let version = {
            let name = name.clone();
            self.write(move |store| async move { store.delete_certificate(&name).await })
                .await?
        };
        tracing::info!(certificate = %name, version, "certificate deleted");
        Ok(Response::new(pb::DeleteCertificateResponse {
            config_version: version,
        }))
    }

    async fn create_consumer(
        &self,
        request: Request<pb::CreateConsumerRequest>,
    ) -> Result<Response<pb::CreateConsumerResponse>, Status> {
        let pb::CreateConsumerRequest { consumer } = request.into_inner();
        let consumer = consumer_of(consumer)?;
        let (consumer, version) = self
            .write(move |store| async move { store.create_consumer(consumer).await })
            .await?;
        tracing::info!(consumer = %consumer.name, groups = ?consumer.groups, version, "consumer created");
        Ok(Response::new(pb::CreateConsumerResponse {
            consumer: Some(consumer.to_public()),
            config_version: version,
        }))
    }

    async fn update_consumer(
        &self,
        request: Request<pb::UpdateConsumerRequest>,
    ) -> Result<Response<pb::UpdateConsumerResponse>, Status> {
        let pb::UpdateConsumerRequest { consumer } = request.into_inner();
        let Consumer { name, groups, .. } = consumer_of(consumer)?;
        let (consumer, version) = self
            .write(move |store| async move { store.update_consumer(&name, groups).await })
            .await?;
        tracing::info!(consumer = %consumer.name, groups = ?consumer.groups, version, "consumer updated");
        Ok(Response::new(pb::UpdateConsumerResponse {
            consumer: Some(consumer.to_public()),
            config_version: version,
        }))
    }

    async fn get_consumer(
        &self,
        request: Request<pb::GetConsumerRequest>,
    ) -> Result<Response<pb::GetConsumerResponse>, Status> {
        let pb::GetConsumerRequest { name } = request.into_inner();
        lookup_name(&name)?;
        let state = self.store.current();
        let consumer = state
            .consumers
            .get(&name)
            .ok_or_else(|| Status::not_found(format!("consumer '{name}' does not exist")))?;
        Ok(Response::new(pb::GetConsumerResponse {
            consumer: Some(consumer.to_public()),
        }))
    }

    async fn list_consumers(
        &self,
        request: Request<pb::ListConsumersRequest>,
    ) -> Result<Response<pb::ListConsumersResponse>, Status> {
        let pb::ListConsumersRequest {} = request.into_inner();
        let state = self.store.current();
        Ok(Response::new(pb::ListConsumersResponse {
            consumers: state.consumers.values().map(|c| c.to_public()).collect(),
            config_version: state.version,
        }))
    }

    async fn delete_consumer(
        &self,
        request: Request<pb::DeleteConsumerRequest>,
    ) -> Result<Response<pb::DeleteConsumerResponse>, Status> {
        let pb::DeleteConsumerRequest { name } = request.into_inner();
        lookup_name(&name)?;
        let version = {
            let name = name.clone();
            self.write(move |store| async move { store.delete_consumer(&name).await })
                .await?
        };
        tracing::info!(consumer = %name, version, "consumer deleted");
        Ok(Response::new(pb::DeleteConsumerResponse {
            config_version: version,
        }))
    }

    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let pb::CreateApiKeyRequest { consumer, ttl } = request.into_inner();
        validate::name(&consumer)
            .map_err(|p| Status::invalid_argument(format!("consumer: {p}")))?;
        let ttl = check_ttl(ttl)?;
        // Generated here, so every key has the same entropy whoever asks; only its hash is
        // written, and the key leaves in this one answer.
        let (key, record) = ApiKey::generate(std::time::SystemTime::now(), ttl);
        let public = record.to_public(&consumer);
        let version = {
            let consumer = consumer.clone();
            self.write(move |store| async move { store.add_api_key(&consumer, record).await })
                .await?
        };
        // The id and last 4 characters only: the key never reaches a log.
        tracing::info!(consumer = %consumer, id = %public.id, last4 = %public.last4, version, "API key created");
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: key.expose().to_owned(),
            api_key: Some(public),
            config_version: version,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let pb::ListApiKeysRequest { consumer } = request.into_inner();
        let state = self.store.current();
        let consumers = selected_consumers(&state, &consumer)?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: consumers
                .iter()
                .flat_map(|c| c.api_keys.iter().map(|k| k.to_public(&c.name)))
                .collect(),
            config_version: state.version,
        }))
    }

    async fn delete_api_key(
        &self,
        request: Request<pb::DeleteApiKeyRequest>,
    ) -> Result<Response<pb::DeleteApiKeyResponse>, Status> {
        let pb::DeleteApiKeyRequest { id } = request.into_inner();
        credential_id(&id, "k-", "an API key id", "gwctl key list")?;
        let (consumer, version) = {
            let id = id.clone();
            self.write(move |store| async move { store.delete_api_key(&id).await })
                .await?
        };
        tracing::info!(consumer = %consumer, id = %id, version, "API key revoked");
        Ok(Response::new(pb::DeleteApiKeyResponse {
            config_version: version,
        }))
    }

    async fn create_jwt_credential(
        &self,
        request: Request<pb::CreateJwtCredentialRequest>,
    ) -> Result<Response<pb::CreateJwtCredentialResponse>, Status> {
        let pb::CreateJwtCredentialRequest { credential } = request.into_inner();
        let credential =
            credential.ok_or_else(|| Status::invalid_argument("credential: required"))?;
        let (consumer, credential) =
            JwtCredential::create(credential, std::time::SystemTime::now())?;
        let public = credential.to_public(&consumer);
        let version = {
            let consumer = consumer.clone();
            self.write(
                move |store| async move { store.add_jwt_credential(&consumer, credential).await },
            )
            .await?
        };
        // Never the key: an id, the issuer and what kind of key it is.
        tracing::info!(consumer = %consumer, id = %public.id, issuer = %public.issuer,
            algorithm = public.algorithm().as_str_name(), version, "JWT credential created");
        Ok(Response::new(pb::CreateJwtCredentialResponse {
            credential: Some(public),
            config_version: version,
        }))
    }

    async fn list_jwt_credentials(
        &self,
        request: Request<pb::ListJwtCredentialsRequest>,
    ) -> Result<Response<pb::ListJwtCredentialsResponse>, Status> {
        let pb::ListJwtCredentialsRequest { consumer } = request.into_inner();
        let state = self.store.current();
        let consumers = selected_consumers(&state, &consumer)?;
        Ok(Response::new(pb::ListJwtCredentialsResponse {
            credentials: consumers
                .iter()
                .flat_map(|c| c.jwt_credentials.iter().map(|j| j.to_public(&c.name)))
                .collect(),
            config_version: state.version,
        }))
    }

    async fn delete_jwt_credential(
        &self,
        request: Request<pb::DeleteJwtCredentialRequest>,
    ) -> Result<Response<pb::DeleteJwtCredentialResponse>, Status> {
        let pb::DeleteJwtCredentialRequest { id } = request.into_inner();
        credential_id(&id, "j-", "a JWT credential id", "gwctl consumer jwt list")?;
        let (consumer, version) = {
            let id = id.clone();
            self.write(move |store| async move { store.delete_jwt_credential(&id).await })
                .await?
        };
        tracing::info!(consumer = %consumer, id = %id, version, "JWT credential removed");
        Ok(Response::new(pb::DeleteJwtCredentialResponse {
            config_version: version,
        }))
    }

    async fn apply_config(
        &self,
        request: Request<pb::ApplyConfigRequest>,
    ) -> Result<Response<pb::ApplyConfigResponse>, Status> {
        let (document, dry_run) = Document::try_from_request(request.into_inner())?;
        let applied = self
            .write(move |store| async move { store.apply(document, dry_run).await })
            .await?;
        if applied.applied {
            crate::apply::log_changes(&applied.diff, applied.version, "ApplyConfig");
        }
        Ok(Response::new(pb::ApplyConfigResponse {
            diff: Some((&applied.diff).into()),
            config_version: applied.version,
            applied: applied.applied,
        }))
    }
}
