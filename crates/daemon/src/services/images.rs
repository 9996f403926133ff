//! The Images gRPC service: containerd's `images.v1.Images` over the
//! metadata image store, publishing `/images/*` events.

use std::sync::Arc;

use berth_api::containerd::services::images::v1 as pb;
use berth_api::containerd::services::images::v1::images_server::Images;
use berth_api::containerd::types::Descriptor;
use berth_events::Exchange;
use berth_metadata::{Db, ImageRecord, Labels, Target};
use tonic::{Request, Response, Status};

use super::{namespace_of, with_db};
use crate::gc::Collector;
use crate::wire::pack;

/// Serves the images API.
#[derive(Debug, Clone)]
pub(crate) struct ImagesService {
    db: Db,
    exchange: Arc<Exchange>,
    gc: Collector,
}

impl ImagesService {
    /// A service over `db`, publishing on `exchange`, collecting with `gc` after deletions.
    pub(crate) fn new(db: Db, exchange: Arc<Exchange>, gc: Collector) -> ImagesService {
        ImagesService { db, exchange, gc }
    }

    fn publish(&self, ns: &str, topic: &str, event: prost_types::Any) {
        if let Err(e) = self.exchange.publish(ns, topic, event) {
            tracing::warn!(error = %e, topic, "cannot publish image event");
        }
    }
}

/// The wire form of an image record.
pub(crate) fn image_to_proto(r: ImageRecord) -> pb::Image {
    pb::Image {
        name: r.name,
        labels: r.labels.into_iter().collect(),
        target: Some(Descriptor {
            media_type: r.target.media_type,
            digest: r.target.digest,
            size: r.target.size,
            annotations: r.target.annotations.into_iter().collect(),
        }),
        created_at: Some(r.created_at.into()),
        updated_at: Some(r.updated_at.into()),
    }
}

fn target_of(d: Option<Descriptor>) -> Target {
    let d = d.unwrap_or_default();
    Target {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations.into_iter().collect(),
    }
}

fn matches(filter: &berth_filters::Filter, r: &ImageRecord) -> bool {
    let fields = berth_filters::Fields::new()
        .with("name", &r.name)
        .with("target.digest", &r.target.digest)
        .with("target.mediatype", &r.target.media_type)
        .with_labels(&r.labels);
    filter.matches(&fields)
}

#[tonic::async_trait]
impl Images for ImagesService {
    async fn get(
        &self,
        r: Request<pb::GetImageRequest>,
    ) -> Result<Response<pb::GetImageResponse>, Status> {
        let ns = namespace_of(&r)?;
        let name = r.into_inner().name;
        let image = super::read_db(&self.db, |db| db.images().get(&ns, &name))?;
        Ok(Response::new(pb::GetImageResponse {
            image: Some(image_to_proto(image)),
        }))
    }

    async fn list(
        &self,
        r: Request<pb::ListImagesRequest>,
    ) -> Result<Response<pb::ListImagesResponse>, Status> {
        let ns = namespace_of(&r)?;
        let filter = berth_filters::parse_all(&r.get_ref().filters)
            .map_err(|e| Status::invalid_argument(format!("invalid filter: {e}")))?;
        let images = with_db(&self.db, move |db| db.images().list(&ns)).await?;
        Ok(Response::new(pb::ListImagesResponse {
            images: images
                .into_iter()
                .filter(|i| matches(&filter, i))
                .map(image_to_proto)
                .collect(),
        }))
    }

    async fn create(
        &self,
        r: Request<pb::CreateImageRequest>,
    ) -> Result<Response<pb::CreateImageResponse>, Status> {
        let ns = namespace_of(&r)?;
        let image = r
            .into_inner()
            .image
            .ok_or_else(|| Status::invalid_argument("create needs an image"))?;
        let labels: Labels = image.labels.into_iter().collect();
        let (name, target) = (image.name, target_of(image.target));
        let ns2 = ns.clone();
        let created = with_db(&self.db, move |db| {
            db.images().create(&ns2, &name, target, labels)
        })
        .await?;
        self.publish(
            &ns,
            "/images/create",
            pack(&pb::ImageCreate {
                name: created.name.clone(),
                labels: created.labels.clone().into_iter().collect(),
            }),
        );
        Ok(Response::new(pb::CreateImageResponse {
            image: Some(image_to_proto(created)),
        }))
    }

    async fn update(
        &self,
        r: Request<pb::UpdateImageRequest>,
    ) -> Result<Response<pb::UpdateImageResponse>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let image = r
            .image
            .ok_or_else(|| Status::invalid_argument("update needs an image"))?;
        let paths = r.update_mask.map(|m| m.paths).unwrap_or_default();
        let labels: Labels = image.labels.into_iter().collect();
        let (name, target) = (image.name, target_of(image.target));
        let ns2 = ns.clone();
        let updated = with_db(&self.db, move |db| {
            db.images().update(&ns2, &name, target, labels, &paths)
        })
        .await?;
        self.publish(
            &ns,
            "/images/update",
            pack(&pb::ImageUpdate {
                name: updated.name.clone(),
                labels: updated.labels.clone().into_iter().collect(),
            }),
        );
        Ok(Response::new(pb::UpdateImageResponse {
            image: Some(image_to_proto(updated)),
        }))
    }

    async fn delete(&self, r: Request<pb::DeleteImageRequest>) -> Result<Response<()>, Status> {
        let ns = namespace_of(&r)?;
        let r = r.into_inner();
        let (name, sync) = (r.name, r.sync);
        let target = r.target.map(|t| t.digest);
        let (ns2, name2) = (ns.clone(), name.clone());
        with_db(&self.db, move |db| {
            db.images().delete(&ns2, &name2, target.as_deref())
        })
        .await?;
        self.publish(&ns, "/images/delete", pack(&pb::ImageDelete { name }));
        // The DB told the scheduler of the deletion; `sync` waits for a
        // collection (containerd's ScheduleAndWait; its error is Unknown).
        if sync {
            self.gc.schedule_and_wait().await.map_err(Status::unknown)?;
        }
        Ok(Response::new(()))
    }
}
