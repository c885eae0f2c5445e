//! Writing one object by multipart upload.

use std::io::Write;

use object_store::{MultipartUpload, ObjectStoreExt, PutPayload, UploadPart};

use super::{block_on, runtime, store_error, Object, PARTS_IN_FLIGHT, PART_SIZE};
use crate::error::{Error, Result};

/// Writes one object by multipart upload: parts of [`PART_SIZE`] go up in the background while
/// the writer fills the next; [`ObjectWriter::finish`] completes the upload (an object smaller
/// than one part is sent with a single PUT). Until then the object does not exist; on failure
/// or [`ObjectWriter::abort`] the upload is aborted and nothing is left.
pub struct ObjectWriter {
    object: Object,
    buf: Vec<u8>,
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: Vec<tokio::task::JoinHandle<object_store::Result<()>>>,
    written: u64,
    failed: Option<String>,
}

impl ObjectWriter {
    pub fn new(object: Object) -> Self {
        ObjectWriter {
            object,
            buf: Vec::new(),
            upload: None,
            in_flight: Vec::new(),
            written: 0,
            failed: None,
        }
    }

    pub fn url(&self) -> String {
        self.object.url()
    }

    /// Bytes accepted so far.
    pub fn bytes(&self) -> u64 {
        self.written
    }

    fn fail(&mut self, what: &str, e: &object_store::Error) -> std::io::Error {
        let err = store_error(&self.object.url(), what, e);
        self.failed = Some(err.to_string());
        std::io::Error::other(err.to_string())
    }

    fn send_part(&mut self) -> std::io::Result<()> {
        if let Some(f) = &self.failed {
            return Err(std::io::Error::other(f.clone()));
        }
        if self.upload.is_none() {
            let store = self.object.store.clone();
            let key = self.object.key.clone();
            match block_on(async move { store.put_multipart(&key).await }) {
                Ok(u) => self.upload = Some(u),
                Err(e) => return Err(self.fail("cannot start the upload", &e)),
            }
        }
        let data = std::mem::take(&mut self.buf);
        let part: UploadPart = self
            .upload
            .as_mut()
            .expect("started above")
            .put_part(PutPayload::from(data));
        self.in_flight.push(runtime().spawn(part));
        if self.in_flight.len() >= PARTS_IN_FLIGHT {
            let oldest = self.in_flight.remove(0);
            self.wait(oldest)?;
        }
        Ok(())
    }

    fn wait(
        &mut self,
        h: tokio::task::JoinHandle<object_store::Result<()>>,
    ) -> std::io::Result<()> {
        match block_on(h) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.fail("upload of a part failed", &e)),
            Err(e) => Err(std::io::Error::other(format!(
                "{}: upload task failed: {e}",
                self.object.url()
            ))),
        }
    }

    /// Send what is left and complete the object. On failure the upload is aborted.
    pub fn finish(mut self) -> Result<()> {
        let url = self.object.url();
        let r = (|| -> std::io::Result<()> {
            if self.upload.is_none() {
                let store = self.object.store.clone();
                let key = self.object.key.clone();
                let data = PutPayload::from(std::mem::take(&mut self.buf));
                return block_on(async move { store.put(&key, data).await })
                    .map(|_| ())
                    .map_err(|e| self.fail("cannot write", &e));
            }
            if !self.buf.is_empty() {
                self.send_part()?;
            }
            for h in std::mem::take(&mut self.in_flight) {
                self.wait(h)?;
            }
            let upload = self.upload.as_mut().expect("started");
            block_on(upload.complete()).map_err(|e| self.fail("cannot complete the upload", &e))?;
            // Complete: nothing to abort any more.
            self.upload = None;
            Ok(())
        })();
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                self.abort();
                Err(Error::store(url, e.to_string()))
            }
        }
    }

    /// Abort the upload: no object appears, the parts sent are dropped.
    pub fn abort(&mut self) {
        for h in std::mem::take(&mut self.in_flight) {
            h.abort();
            let _ = block_on(h);
        }
        if let Some(mut u) = self.upload.take() {
            if let Err(e) = block_on(u.abort()) {
                tracing::warn!(object = %self.object.url(), error = %e, "could not abort the multipart upload; a bucket lifecycle rule (AbortIncompleteMultipartUpload) removes its parts");
            }
        }
        self.buf = Vec::new();
    }
}

impl Write for ObjectWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if let Some(f) = &self.failed {
            return Err(std::io::Error::other(f.clone()));
        }
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= PART_SIZE {
            self.send_part()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ObjectWriter {
    fn drop(&mut self) {
        if self.upload.is_some() {
            self.abort();
        }
    }
}

/// Rename an object (copy, then delete the source).
pub fn rename_object(from: &Object, to: &Object) -> Result<()> {
    block_on(from.store.rename(&from.key, &to.key))
        .map_err(|e| store_error(&to.url(), "cannot move into place", &e))
}
