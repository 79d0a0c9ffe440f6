package org.slidesam.qupath

import groovy.transform.CompileStatic
import java.util.concurrent.CompletableFuture
import java.util.concurrent.Executor
import java.util.function.Consumer
import java.util.function.Supplier
import org.locationtech.jts.io.WKTReader
import org.slidesam.client.Rect
import org.slidesam.client.SlidesamClient
import org.slidesam.client.live.LiveImage
import org.slidesam.client.live.LiveSegmenter
import org.slidesam.client.live.LiveSettings
import org.slidesam.client.live.PromptAnnotation
import org.slidesam.client.live.PromptGroups
import org.slidesam.client.live.ResultAnnotation
import org.slidesam.client.live.SlideMap
import org.slidesam.client.live.View
import qupath.lib.geom.Point2
import qupath.lib.objects.PathAnnotationObject
import qupath.lib.objects.PathObject
import qupath.lib.objects.PathObjects
import qupath.lib.objects.PathROIObject
import qupath.lib.objects.classes.PathClass
import qupath.lib.objects.hierarchy.PathObjectHierarchy
import qupath.lib.objects.hierarchy.events.PathObjectHierarchyEvent
import qupath.lib.objects.hierarchy.events.PathObjectHierarchyListener
import qupath.lib.objects.hierarchy.events.PathObjectSelectionListener
import qupath.lib.regions.ImagePlane
import qupath.lib.roi.GeometryTools
import qupath.lib.roi.ROIs
import qupath.lib.roi.interfaces.ROI

/**
 * The live client on one image's object hierarchy, on qupath-core alone (no viewer, no JavaFX): it
 * listens to the hierarchy, reads the prompt annotations from it, has {@link LiveSegmenter} bring every
 * changed prompt group up to date on the server, and creates or updates the group's result annotation
 * in place. The GUI script supplies the three things only QuPath's GUI knows: how to run on its UI
 * thread, the region the viewer shows, and how to tell the user something.
 *
 * Everything here runs on the UI thread except {@link #awaitIdle}: hierarchy events, the prompts read on
 * them, the results written and {@link #undoLast}.
 */
@CompileStatic
final class LiveHierarchy implements PathObjectHierarchyListener, PathObjectSelectionListener, AutoCloseable {

    private final PathObjectHierarchy hierarchy
    private final ImagePlane plane
    private final Executor ui
    private final Supplier<Rect> visible
    private final Consumer<String> notify
    private final LiveSegmenter live
    /** Classes whose area annotations are never "the selected annotation" that sets the field of view. */
    private final Set<String> ownClasses
    private PathObject selectedArea

    /**
     * @param plane   the plane results are written on (the viewer's)
     * @param ui      runs a task on QuPath's UI thread, after the event being handled
     * @param visible the level-0 region the viewer shows (asked on the UI thread)
     * @param notify  tells the user a problem or what was left alone (called on the UI thread)
     */
    LiveHierarchy(PathObjectHierarchy hierarchy, ImagePlane plane, SlidesamClient client, LiveImage image,
                  LiveSettings settings, SlideMap slideMap, Executor ui, Supplier<Rect> visible, Consumer<String> notify) {
        this.hierarchy = hierarchy
        this.plane = plane
        this.ui = ui
        this.visible = visible
        this.notify = notify
        def classes = settings.classes()
        ownClasses = [classes.positive(), classes.negative(), classes.box(), settings.targetClass()] as Set<String>
        live = new LiveSegmenter(client, image, settings, slideMap,
                { ResultAnnotation result -> ui.execute { write(result) } } as Consumer<ResultAnnotation>,
                { String message -> ui.execute { notify.accept(message) } } as Consumer<String>)
    }

    /** Starts listening; the prompt groups present now count as done until they change. */
    void start() {
        live.baseline(prompts())
        hierarchy.addListener(this)
        hierarchy.selectionModel.addPathObjectSelectionListener(this)
    }

    /** Once an edit is complete (not while a point is being dragged), segments what changed. */
    @Override
    void hierarchyChanged(PathObjectHierarchyEvent event) {
        if (!event.isChanging())
            ui.execute { live.submit(prompts(), view()) }
    }

    /** Remembers the last area annotation selected that is neither a prompt nor a result. */
    @Override
    void selectedPathObjectChanged(PathObject selected, PathObject previous, Collection<PathObject> allSelected) {
        if (selected != null && selected.isAnnotation() && selected.ROI.isArea() && !ownClasses.contains(selected.pathClass?.toString()))
            selectedArea = selected
    }

    /** The image's classified annotations as the prompt logic reads them, in hierarchy order. */
    List<PromptAnnotation> prompts() {
        hierarchy.annotationObjects.findAll { PathObject p -> p.pathClass != null }.collect { PathObject p -> prompt(p) }
    }

    private static PromptAnnotation prompt(PathObject annotation) {
        ROI roi = annotation.ROI
        String id = annotation.ID.toString()
        String pathClass = annotation.pathClass.toString()
        if (roi.isPoint()) {
            List<Point2> points = roi.allPoints
            double[] xy = new double[points.size() * 2]
            points.eachWithIndex { Point2 p, int i ->
                xy[2 * i] = p.x
                xy[2 * i + 1] = p.y
            }
            return PromptAnnotation.points(id, pathClass, annotation.name, xy)
        }
        if (roi.isArea())
            return PromptAnnotation.area(id, pathClass, annotation.name, roi.boundsX, roi.boundsY, roi.boundsWidth, roi.boundsHeight)
        return PromptAnnotation.other(id, pathClass, annotation.name, roi.roiName)
    }

    private View view() {
        PathObject area = selectedArea
        ROI selection = area != null && area.parent != null ? area.ROI : null
        new View(selection == null ? null : new Rect(selection.boundsX, selection.boundsY, selection.boundsWidth, selection.boundsHeight),
                visible.get())
    }

    /** The result annotations of a prompt group (normally one), in hierarchy order. */
    List<PathAnnotationObject> results(String group) {
        hierarchy.annotationObjects.findAll { PathObject p -> p instanceof PathAnnotationObject && ResultAnnotation.groupOf(p.description) == group }
                as List<PathAnnotationObject>
    }

    /** Creates the group's result annotation, or updates it in place (same object, same ID); a locked result stays as it is. */
    void write(ResultAnnotation result) {
        List<PathAnnotationObject> existing = results(result.group())
        if (existing.any { PathAnnotationObject p -> p.isLocked() }) {
            notify.accept(result.name() + " is locked: left as it is")
            return
        }
        ROI roi = GeometryTools.geometryToROI(new WKTReader().read(result.wkt()), plane)
        PathClass pathClass = PathClass.fromString(result.pathClass())
        PathAnnotationObject target = existing ? existing[0] : (PathAnnotationObject) PathObjects.createAnnotationObject(roi, pathClass)
        target.setROI(roi)  // clears the measurements of an earlier ROI
        target.setPathClass(pathClass)
        target.setName(result.name())
        target.setDescription(result.description())
        result.measurements().each { String key, Double value -> target.measurementList.put(key, value) }
        if (existing) {
            hierarchy.updateObject(target, false)
            existing.drop(1).each { PathAnnotationObject extra -> hierarchy.removeObject(extra, true) }
        } else {
            hierarchy.addObject(target)
        }
    }

    /**
     * Takes the last point of the object segmented last away, as QuPath's Alt+click on it would (the
     * annotation goes when it was its only point); the hierarchy change makes the server undo that click.
     *
     * @return false when there is nothing to undo
     */
    boolean undoLast() {
        PromptGroups.PointsEdit edit = live.undoEdit(prompts())
        PathObject found = edit == null ? null : hierarchy.annotationObjects.find { PathObject p -> p.ID.toString() == edit.annotationId() }
        if (!(found instanceof PathROIObject))
            return false
        PathROIObject target = (PathROIObject) found
        double[] xy = edit.remaining()
        if (xy.length == 0) {
            hierarchy.removeObject(target, true)
            return true
        }
        double[] xs = new double[xy.length.intdiv(2) as int]
        double[] ys = new double[xs.length]
        for (int i = 0; i < xs.length; i++) {
            xs[i] = xy[2 * i]
            ys[i] = xy[2 * i + 1]
        }
        target.setROI(ROIs.createPointsROI(xs, ys, target.ROI.imagePlane))
        hierarchy.updateObject(target, false)
        return true
    }

    /** Waits until the edits made so far are segmented and their results written. Not for the UI thread. */
    void awaitIdle() {
        onUi()
        live.awaitIdle()
        onUi()
    }

    private void onUi() {
        CompletableFuture.runAsync({ } as Runnable, ui).get()
    }

    /** Stops listening and closes the server objects; the results stay. */
    @Override
    void close() {
        hierarchy.removeListener(this)
        hierarchy.selectionModel.removePathObjectSelectionListener(this)
        live.close()
    }
}
