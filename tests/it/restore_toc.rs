//! The unpacked archive gets its data offsets ([`atpred::restore::toc`]): pg_dump wrote them as
//! "not set" (it wrote to a pipe), `add_offsets` fills in every data block's, a second pass
//! finds none left to fill, and `pg_restore -j 2` of the patched file restores every table
//! identical to the source (it checks the block id at each offset it seeks to).

use atpred::restore::toc;

use crate::backup_support::{pg_restore_command, quote, shell};
use crate::restore_support::{SOURCE, backed_up, fingerprints};

#[test]
fn data_offsets_are_written_into_the_unpacked_archive() {
    let (fx, _daemon, id) = backed_up(|b| b);
    let packed = fx.backup_dir().join(&id).join("database.backup");
    let unpacked = fx.dir.path().join("unpacked.dump");
    shell(&format!(
        "zstd -dc -q {} > {}",
        quote(&packed),
        quote(&unpacked)
    ));
    let patched = toc::add_offsets(&unpacked)
        .expect("the archive reads")
        .expect("a version this reader knows");
    // One per table with a data block: the six tables but `events`, a partitioned table whose
    // rows are in its partitions.
    assert_eq!(patched, 5, "one offset per table with data");
    assert_eq!(
        toc::add_offsets(&unpacked).unwrap().unwrap(),
        0,
        "none left unset"
    );
    fx.pg.psql("postgres", "CREATE DATABASE patched");
    shell(&format!(
        "{} -j 2 {}",
        pg_restore_command(&fx.pg, "patched"),
        quote(&unpacked)
    ));
    assert_eq!(fingerprints(&fx, "patched"), fingerprints(&fx, SOURCE));
}
